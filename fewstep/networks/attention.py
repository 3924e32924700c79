"""Attention and normalisation that forward-mode AD can differentiate and reverse mode can differentiate again.

MeanFlow, sCT and TVM differentiate the flow map with a forward-mode JVP (``FlowMap.jvp``); TVM then back-
propagates through that JVP. Measured on torch 2.14:

- the fused attention kernels have no forward-mode rule (NotImplementedError);
- the forward-mode rule of ``torch.softmax`` cannot be back-propagated ("modified by an inplace operation");
- the forward-mode rule of ``F.layer_norm`` CAN be back-propagated but gives a wrong gradient, silently
  (reverse-over-forward against finite differences: -3.22 vs -3.63 with an affine input, -17.7 vs -35.3
  without; group_norm, silu and gelu agree to 1e-8).

Inside a JVP the backbones therefore run these on plain ops: a softmax from exp and sum,
``scaled_dot_product_attention`` as the two products around it, layer norm from mean and variance
(docs/objectives.md §3.10 item 4, §5.8 item 1). Outside a JVP, and on tensors without a tangent, nothing
changes.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

Tensor = torch.Tensor
_FUSED = F.scaled_dot_product_attention
_LAYER_NORM = F.layer_norm


def _dual(*xs: Tensor | None) -> bool:
    return any(x is not None and fwAD.unpack_dual(x).tangent is not None for x in xs)


def softmax(x: Tensor, dim: int) -> Tensor:
    """``x.softmax(dim)``; on a dual tensor exp(x - max) / sum, whose forward-mode derivative reverse-mode can
    differentiate (torch's softmax rule cannot)."""
    if not _dual(x):
        return x.softmax(dim)
    e = (x - x.detach().amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


def plain_sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
               is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` as softmax(q k^T scale + mask) v on plain ops when a tangent is
    present (Vaswani et al. 2017, scale 1/sqrt(d)); the fused call otherwise."""
    if not _dual(q, k, v, attn_mask):
        return _FUSED(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                      enable_gqa=enable_gqa)
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    logits = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        n, m = q.shape[-2], k.shape[-2]
        logits = logits.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    weights = softmax(logits, -1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def plain_layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
                     eps: float = 1e-5) -> Tensor:
    """``F.layer_norm`` as (x - mean) / sqrt(var + eps) * weight + bias over the last dims (Ba et al. 2016) on
    plain ops when a tangent is present (torch's own forward rule back-propagates wrongly); the fused call
    otherwise."""
    if not _dual(x, weight, bias):
        return _LAYER_NORM(x, normalized_shape, weight, bias, eps)
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    centred = x - x.mean(dims, keepdim=True)
    out = centred * torch.rsqrt(centred.pow(2).mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


@contextmanager
def differentiable_attention() -> Iterator[None]:
    """Route ``torch.nn.functional.scaled_dot_product_attention`` and ``layer_norm`` through
    :func:`plain_sdpa` and :func:`plain_layer_norm` for the block: the DiT, ``nn.LayerNorm`` and diffusers'
    attention processors call them by those names. Used by ``FlowMap.jvp`` only."""
    F.scaled_dot_product_attention, F.layer_norm = plain_sdpa, plain_layer_norm
    try:
        yield
    finally:
        F.scaled_dot_product_attention, F.layer_norm = _FUSED, _LAYER_NORM
