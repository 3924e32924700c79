"""The pair of times (r, t) of MeanFlow (Geng et al. 2025, §4 "Sampling time steps"; docs/objectives.md §3.3).

The CIFAR-10 sampler of the paper (py-meanflow ``sample_two_timesteps_t_r_v0``, "used in paper"):

1. t and r drawn independently from logit-normal laws, t = sigmoid(m_t + s_t n), r = sigmoid(m_r + s_r n');
2. swapped so that t = max and r = min;
3. each row independently keeps r != t with probability ``share_r_neq_t`` (py-meanflow ``--ratio``, "Probability
   of sampling r DIFFERENT from t"); on the other rows r = t.

The JAX ImageNet code (meanflow ``MeanFlow.sample_tr``) differs only in step 3: it sets r = t on the *first*
floor(B data_proportion) rows, data_proportion being the share of r = t rows (0.75), the opposite meaning of
PyTorch's ``ratio``. This module follows the PyTorch per-row draw; ``share_r_neq_t`` has one meaning: the
share of rows with r != t. Both times are finally clipped to the interpolant's range [eps, T] (the codes clip
to [0, 1], the range of the paper's path), which keeps r <= t.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def logit_normal(n: int, mean: float, std: float, device=None, dtype=torch.float32) -> Tensor:
    """t = sigmoid(mean + std z), z ~ N(0, 1): the logit-normal law of SD3 (Esser et al. 2024, Eq. 19) that
    MeanFlow draws both times from (MF §4, Table 1d: lognorm(-0.4, 1.0) best on ImageNet)."""
    return torch.sigmoid(mean + std * torch.randn(n, device=device, dtype=dtype))


def sample_r_t(n: int, *, mean_t: float, std_t: float, mean_r: float, std_r: float, share_r_neq_t: float,
               eps: float = 0.0, T: float = 1.0, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """(r, t), each [n], with eps <= r <= t <= T: the paper's CIFAR-10 sampler ("v0", see the module docstring).

    Draw order (for replaying the global RNG): the n values of t's law, the n values of r's law, then n
    uniforms u; a row keeps r != t iff u < share_r_neq_t.
    """
    t = logit_normal(n, mean_t, std_t, device, dtype)
    r = logit_normal(n, mean_r, std_r, device, dtype)
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    keep = torch.rand(n, device=device, dtype=dtype) < share_r_neq_t
    r = torch.where(keep, r, t)
    return r.clamp(eps, T), t.clamp(eps, T)
