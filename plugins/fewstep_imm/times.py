"""IMM's times: t ~ U(eps, T), s | t ~ U(eps, t), and the mapping r(s, t) in [s, t).

All in float64, because near T the gap t - r is a few float32 ulps (k = 15 gives t - r ~ 1.8e-7 at
t = 0.994; docs/imm.md §4.3).
"""
from __future__ import annotations

import torch

from fewstep.interpolants import Interpolant

Tensor = torch.Tensor


def sample_times(ip: Interpolant, n: int, device=None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
    """(s, t) with t ~ U(eps, T) and s | t ~ U(eps, t), float64 of shape [n] (IMM §4.2, App. C.7)."""
    u = torch.rand(2, n, dtype=torch.float64, device=device, generator=generator)
    t = ip.eps + (ip.T - ip.eps) * u[0]
    s = ip.eps + (t - ip.eps) * u[1]
    return s, t


def _bounds(ip: Interpolant, fn) -> tuple[float, float]:
    ends = fn(torch.tensor([ip.eps, ip.T], dtype=torch.float64))
    return float(ends.min()), float(ends.max())


def mapping_r(ip: Interpolant, s: Tensor, t: Tensor, mapping: str = "eta", k: int = 15,
              min_gap: float = 0.0) -> Tensor:
    """r(s, t) = max(s, min(t - Delta, r'(t))) with r'(t) one constant step of size range / 2^k back
    from t in a chosen quantity (IMM §4.2, App. C.6, I.6):

    - ``eta``: eta_r' = max(eta_t - (eta_max - eta_min)/2^k, eta_min), eta_max/min = eta(T)/eta(eps);
    - ``t``: r' = t - (T - eps)/2^k;
    - ``lambda``: lambda_r' = min(lambda_t + (lambda(eps) - lambda(T))/2^k, lambda(eps)) (log-SNR rises as t falls);
    - ``inv_eta``: 1/eta_r' = 1/eta_t + (1/eta(eps) - 1/eta(T))/2^k.

    Where the step would cross s, r = s: the target is then the interpolant itself, the base case
    of the induction (IMM §4.1).
    """
    s, t = s.double(), t.double()
    scale = 2.0 ** -k
    if mapping == "eta":
        lo, hi = _bounds(ip, ip.eta)
        r = ip.eta_inv((ip.eta(t) - (hi - lo) * scale).clamp(lo, hi))
    elif mapping == "t":
        r = t - (ip.T - ip.eps) * scale
    elif mapping == "lambda":
        lo, hi = _bounds(ip, ip.lam)
        lam_r = (ip.lam(t) + (hi - lo) * scale).clamp(max=hi)
        r = ip.eta_inv(torch.exp(-0.5 * lam_r))  # lambda = -2 log eta
    elif mapping == "inv_eta":
        lo, hi = _bounds(ip, lambda u: 1.0 / ip.eta(u))
        r = ip.eta_inv(1.0 / (1.0 / ip.eta(t) + (hi - lo) * scale))
    else:
        raise ValueError(f"unknown mapping {mapping!r} (known: eta, t, lambda, inv_eta)")
    if min_gap > 0:
        r = torch.minimum(r, t - min_gap)
    return torch.maximum(r, s)
