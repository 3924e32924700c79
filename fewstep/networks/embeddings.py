"""Time and label embeddings shared by the backbones."""
from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


def sinusoidal(t: Tensor, dim: int, max_period: float = 10_000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """[cos(t w_k), sin(t w_k)] with w_k = max_period^(-k / (dim/2)), k = 0..dim/2-1, computed in ``dtype``.

    The transformer positional embedding used for diffusion timesteps (Vaswani et al. 2017;
    Ho et al. 2020; DiT uses dim 256 and max period 1e4). t is expected on a 0..1000 scale, where
    float32 arguments lose about 1e-4 of each phase: the DiT computes them in float64, as its reference code.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def full_precision(t: Tensor):
    """Autocast off: time embeddings stay in the weights' precision (float32) under bf16 training. Their
    t-derivative is what MeanFlow, sCT and TVM differentiate; a bf16 time MLP makes it noisy and was
    behind the loss spikes of continuous-time consistency models (docs/objectives.md §4.7)."""
    return torch.autocast(t.device.type, enabled=False)


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a 2-layer SiLU MLP (IMM App. I.1 builds s exactly like t), in
    float32 under autocast (:func:`full_precision`)."""

    def __init__(self, out_dim: int, freq_dim: int = 128, features_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.freq_dim, self.features_dtype = freq_dim, features_dtype
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        with full_precision(t):
            dtype = torch.promote_types(self.features_dtype, t.dtype)  # float64 times keep their precision
            return self.mlp(sinusoidal(t, self.freq_dim, dtype=dtype).to(self.mlp[0].weight.dtype))


class Conditioning(nn.Module):
    """emb(t) + emb(s) + emb(label): the s branch is its own MLP whose output is added to t's
    (IMM App. I.1); labels get a table with one extra row, the null class used for guidance."""

    def __init__(self, dim: int, second_time: bool, num_classes: int | None, freq_dim: int = 128,
                 features_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.t_embed = TimeEmbedding(dim, freq_dim, features_dtype)
        self.s_embed = TimeEmbedding(dim, freq_dim, features_dtype) if second_time else None
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: Tensor, s: Tensor | None, cond: Tensor | None, n: int | None = None) -> Tensor:
        """Embeddings [n, dim]. t and s may hold one time per group of n/len(t) consecutive samples
        (grouped times): each distinct time is embedded once, then repeated."""
        emb = self.t_embed(t)
        if self.s_embed is not None:
            if s is None:
                raise ValueError("this network was built with a second time input; pass s")
            emb = emb + self.s_embed(s)
        n = n or emb.shape[0]
        if emb.shape[0] != n:
            emb = emb.expand(n, -1) if emb.shape[0] == 1 else emb.repeat_interleave(n // emb.shape[0], dim=0)
        if self.label_embed is not None:
            labels = cond if cond is not None else torch.full((n,), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.label_embed(labels)
        return emb
