"""Consistency training's noise levels and curricula, in EDM sigma units, and their map to time.

- iCT (Song & Dhariwal 2023, §3.3-3.5): a Karras sigma grid of N(k) points whose size doubles in
  stages, N(k) = min(s0 2^floor(k/K'), s1) + 1, and a discretised log-normal over the grid's
  intervals (docs/peers.md §3.3).
- ECT (Geng et al. 2024): t ~ log-normal in sigma and a continuous r(t) whose gap t - r
  halves every stage (docs/peers.md §3.4).

Everything here is in sigma = sigma_d eta_t, EDM's noise level of x_t / alpha_t = x + sigma z. The
flow map runs in the interpolant's time; :func:`sigma_to_time` converts through the interpolant's own
``from_edm_sigma`` (there is one conversion in the framework, and it lives in the interpolant).

Range. The paper grid spans [sigma_min, sigma_max] = [0.002, 80]. The interpolant only covers
[sigma(eps), sigma(T)] (OT-FM, sigma_d = 0.5, eps = 0.006, T = 0.994: [0.00302, 82.8]), so the grid
used here spans [sigma_lo, sigma_hi] = [max(sigma_min, sigma(eps)), min(sigma_max, sigma(T))] (see
:func:`sigma_range`). Its bottom point sigma_lo is *the data end*: it maps to t = eps, where the flow
map's boundary f(x, eps, eps) = x holds exactly. That is iCT's sigma_min boundary, moved to where
this framework's boundary is. All maths in float64.
"""
from __future__ import annotations

import math

import torch

from fewstep.interpolants import Interpolant

Tensor = torch.Tensor
D64 = torch.float64


# --- the sigma range and its map to time -------------------------------------------------------
def sigma_range(ip: Interpolant, sigma_min: float = 0.002, sigma_max: float = 80.0) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) = (max(sigma_min, sigma(eps)), min(sigma_max, sigma(T))): the paper's
    range (iCT / EDM: 0.002 and 80) clipped to the interpolant's [eps, T].

    Raises ValueError when the two ranges do not overlap.
    """
    ends = ip.to_edm_sigma(torch.tensor([ip.eps, ip.T], dtype=D64)).tolist()
    lo, hi = max(float(sigma_min), ends[0]), min(float(sigma_max), ends[1])
    if not lo < hi:
        raise ValueError(f"the sigma range [{sigma_min}, {sigma_max}] does not overlap the interpolant's "
                         f"[{ends[0]:.4g}, {ends[1]:.4g}] (times [{ip.eps}, {ip.T}])")
    return lo, hi


def sigma_to_time(ip: Interpolant, sigma: Tensor, sigma_lo: float) -> Tensor:
    """The interpolant time of EDM noise level sigma, ``ip.from_edm_sigma`` clamped to [eps, T];
    sigma <= sigma_lo (the data end) maps to t = eps exactly.

    Under OT-FM t = sigma / (sigma_d + sigma), since eta = sigma / sigma_d and t = eta / (1 + eta).
    """
    sigma = torch.as_tensor(sigma, dtype=D64)
    t = ip.from_edm_sigma(sigma).clamp(ip.eps, ip.T)
    return torch.where(sigma <= sigma_lo, torch.full_like(t, ip.eps), t)


# --- iCT ---------------------------------------------------------------------------------------
def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """Ascending Karras grid sigma_i = (sigma_min^(1/rho) + (i-1)/(n-1) (sigma_max^(1/rho) -
    sigma_min^(1/rho)))^rho, i = 1..n (Karras et al. 2022 Eq. 5; iCT; CM App. C), float64 [n]
    with exact endpoints."""
    if n < 2:
        raise ValueError(f"a grid needs at least 2 points (got {n})")
    a, b = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    u = torch.arange(n, dtype=D64) / (n - 1)
    sig = (a + u * (b - a)) ** rho
    sig[0], sig[-1] = sigma_min, sigma_max
    return sig


def stage_length(total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """K' = floor(K / (log2 floor(s1/s0) + 1)), the steps per doubling stage of iCT's curriculum
    (Song & Dhariwal 2023, §3.4, improved curriculum); at least 1. K = 4000, s0 = 10, s1 = 1280 gives 500."""
    return max(1, math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)))


def num_points(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s0 2^floor(k/K'), s1) + 1 (iCT §3.4, improved curriculum): the grid size at step k.

    With s0 = 10, s1 = 1280 it runs 11, 21, 41, ..., 1281 over eight equal stages of the run.
    Steps past the run's end keep the last size.
    """
    stage = step // stage_length(total_steps, s0, s1)
    return min(s0 * 2 ** min(stage, 62), s1) + 1


def index_probabilities(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """p(i) proportional to erf((ln sigma_{i+1} - P_mean)/(sqrt 2 P_std)) - erf((ln sigma_i - P_mean)/(sqrt 2 P_std)),
    i = 1..N-1: the log-normal N(P_mean, P_std^2) of ln sigma, discretised on the grid's intervals
    (iCT §3.5, lognormal noise schedule; P_mean = -1.1, P_std = 2.0). Returns float64 [N-1] summing to 1."""
    z = torch.erf((torch.log(sigmas.to(D64)) - p_mean) / (math.sqrt(2.0) * p_std))
    p = (z[1:] - z[:-1]).clamp_min(0.0)
    return p / p.sum()


def ict_weight(sigma_lo: Tensor, sigma_hi: Tensor) -> Tensor:
    """lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i) (iCT §3.1, weighting function): the loss weight of
    one grid interval."""
    return 1.0 / (sigma_hi - sigma_lo)


# --- ECT ---------------------------------------------------------------------------------------
def ect_stage(step: int, stage_every: int) -> int:
    """The curriculum stage at step k: floor(k / stage_every) (ECT's 'double' ticks; the CIFAR-10
    run advances every 25k iterations of 200k, i.e. eight stages)."""
    return step // max(1, stage_every)


def sample_lognormal_sigma(n: int, p_mean: float = -1.1, p_std: float = 2.0, device=None,
                           generator: torch.Generator | None = None) -> Tensor:
    """sigma with ln sigma ~ N(P_mean, P_std^2) (ECT / EDM; P_mean = -1.1, P_std = 2.0), float64 [n].
    The caller clamps it to the grid's range."""
    z = torch.randn(n, dtype=D64, device=device, generator=generator)
    return torch.exp(p_mean + p_std * z)


def ect_r(sigma_t: Tensor, stage: int, q: float = 2.0, k: float = 8.0, b: float = 1.0) -> Tensor:
    """r = max(0, t (1 - (1 + k sigmoid(-b t)) / q^(stage+1))) in sigma units: ECT's 'sigmoid'
    mapping function (Geng et al. 2024; locuslab/ect training/loss.py; q = 2, k = 8, b = 1).

    The gap t - r = t (1 + 8 sigmoid(-t)) / 2^(stage+1) lies between t/2^(s+1) at large t and
    5t/2^(s+1) near 0; in stage 0, r = 0 (the data end) for every t <= ln 7 ~ 1.95, in stage 1 for
    t <= ln(5/3) ~ 0.51, and from stage 2 on never (docs/peers.md §3.4).
    """
    sigma_t = sigma_t.to(D64)
    shrink = (1.0 + k * torch.sigmoid(-b * sigma_t)) / q ** (stage + 1)
    return (sigma_t * (1.0 - shrink)).clamp_min(0.0)
