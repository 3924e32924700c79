"""TVM's times: the gap l, the terminal time s (truncated so that t = s + l <= 1), the start time t and an
independent flow-matching time s' (docs/objectives.md §5.2 step 1; [TVM] ``training/loss.py``
``TVMLoss.sample_ts``).

All in float64. The official code draws on [0, 1] (its interpolant has eps = 0 and T = 1); on another
range [eps, T] the draws are mapped affinely onto it (with eps = 0 and T = 1 the map is exactly the
identity).
"""
from __future__ import annotations

import torch

from fewstep.interpolants import Interpolant

Tensor = torch.Tensor
D64 = torch.float64


def truncated_logit_normal(upper: Tensor, mean: float, std: float, generator: torch.Generator | None = None
                           ) -> Tensor:
    """sigmoid(n) with n ~ N(mean, std^2) truncated to n <= upper (one bound per sample), by inverse-CDF
    sampling: n = mean + std Phi^-1(u Phi((upper - mean)/std)), u ~ U(0, 1) ([TVM] ``TVMLoss.sample_ts``
    draws the terminal time s this way, with upper = logit(1 - l)). Exact for every upper; float64."""
    upper = upper.to(D64)
    u = torch.rand(upper.shape, dtype=D64, device=upper.device, generator=generator)
    z = torch.special.ndtri(u * torch.special.ndtr((upper - mean) / std))
    return torch.sigmoid(mean + std * z)


def sample_times(ip: Interpolant, n: int, gap_mean: float = -0.8, gap_std: float = 1.0, s_mean: float = -0.4,
                 s_std: float = 1.0, device=None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(s, t, s', l) per sample, float64 [n] ([TVM] ``TVMLoss.sample_ts``; docs/objectives.md §5.2 step 1):

    - gap l = sigmoid(lambda), lambda ~ N(gap_mean, gap_std^2);
    - terminal s = sigmoid(n), n ~ N(s_mean, s_std^2) truncated to n <= logit(1 - l) = -lambda (so s <= 1 - l);
    - start t = min(s + l, 1);
    - FM time s' = sigmoid(N(s_mean, s_std^2)), independent of (s, t).

    The draws are made in that order (randn, rand, randn), as the official code makes them, then mapped
    onto [eps, T] by u -> eps + (T - eps) u, so l is returned on [0, 1] and t - s = (T - eps) l."""
    lam = gap_mean + gap_std * torch.randn(n, dtype=D64, device=device, generator=generator)
    gap = torch.sigmoid(lam)
    s = truncated_logit_normal(-lam, s_mean, s_std, generator)  # logit(1 - sigmoid(lam)) = -lam exactly
    t = (s + gap).clamp(max=1.0)
    s_prime = torch.sigmoid(s_mean + s_std * torch.randn(n, dtype=D64, device=device, generator=generator))
    lo, span = ip.eps, ip.T - ip.eps
    return lo + span * s, lo + span * t, lo + span * s_prime, gap
