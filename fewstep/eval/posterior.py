"""The true posterior of x given x_t, by Monte Carlo over a data sample: what a flow map should follow.

For an interpolant x_t = alpha_t x + sigma_t eps (eps ~ N(0, I)) and data points x_1..x_N, the posterior of
x given x_t puts weight w_i proportional to N(x_t; alpha_t x_i, sigma_t^2 I) on x_i. Its mean is flow matching's
denoiser E[x | x_t] (Lipman et al. 2023, Eq. 5 in x-prediction form); its geometric median is what an
unsquared-distance loss converges to instead (docs/imm.md §11). ``bench/imm_small_gaps.py`` compares the
denoised estimate implied by a trained small-gap map with both.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def posterior_weights(x_t: Tensor, data: Tensor, alpha: float, sigma: float) -> Tensor:
    """w[b, i] = N(x_t[b]; alpha x_i, sigma^2 I) / sum_j N(x_t[b]; alpha x_j, sigma^2 I): x_t [B, D], data [N, D]
    -> [B, N], each row summing to 1 (Bayes' rule with the empirical data distribution as prior)."""
    logw = -torch.cdist(x_t, alpha * data).pow(2) / (2 * sigma**2)
    return torch.softmax(logw, dim=1)


def geometric_median(x: Tensor, w: Tensor, iters: int = 500, tol: float = 1e-7, eps: float = 1e-9) -> Tensor:
    """argmin_m sum_i w[b, i] ||m - x_i|| per row b (the weighted geometric median), by Weiszfeld's iteration
    (Weiszfeld 1937): m <- sum_i (w_i / d_i) x_i / sum_i (w_i / d_i), started at the weighted mean, until no
    row moves by more than ``tol`` (or ``iters`` steps). x [N, D], w [B, N] -> [B, D]. Distances are floored at
    ``eps``, so an iterate on a data point stays well defined."""
    m = w @ x
    for _ in range(iters):
        a = w / torch.cdist(m, x).clamp_min(eps)
        m, prev = (a @ x) / a.sum(1, keepdim=True), m
        if (m - prev).norm(dim=1).max() <= tol:
            break
    return m
