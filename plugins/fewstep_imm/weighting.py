"""IMM's loss weighting w(s, t) and kernel bandwidth w~(s, t)."""
from __future__ import annotations

import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant

Tensor = torch.Tensor


def loss_weight(ip: Interpolant, t: Tensor, a: float = 1.0, b: float = 5.0, elbo: bool = True,
                alpha: bool = True, norm: bool = True) -> Tensor:
    """w(s, t) = 1/2 sigmoid(b - lambda_t) (-d lambda_t/dt) * alpha_t^a * 1/(alpha_t^2 + sigma_t^2)
    (IMM Eq. 13, App. C.9); it depends on t only.

    The three factors can be switched off one by one for the Table 4 ablation (all off: w = 1).
    Under OT-FM: sigmoid(b - lambda_t) (1 - t)^a / (t (1 - t) ((1 - t)^2 + t^2)).
    """
    w = torch.ones_like(t)
    if elbo:
        w = w * 0.5 * torch.sigmoid(b - ip.lam(t)) * (-ip.d_lam(t))
    if alpha:
        w = w * ip.alpha(t) ** a
    if norm:
        w = w / (ip.alpha(t) ** 2 + ip.sigma(t) ** 2)
    return w


def kernel_bandwidth(fm: FlowMap, s: Tensor, t: Tensor, bandwidth: str | float = "c_out",
                     min_gap: float = 0.0) -> Tensor:
    """w~(s, t) = 1 / |c_out(s, t)| from the f-level coefficient (IMM §4.2, App. C.8), or a constant.

    Euler-FM: 1/(sigma_d (t - s)); Simple-EDM: sqrt(alpha_t^2 + sigma_t^2) / (sigma_d |alpha_s sigma_t -
    sigma_s alpha_t|); identity: |sigma_t / (alpha_s sigma_t - sigma_s alpha_t)|.

    ``min_gap`` g > 0 (not in the paper; docs/imm.md §11) evaluates c_out at max(t, s + g): under Euler-FM
    w~ = 1/(sigma_d max(t - s, g)), a cap on the bandwidth at small gaps.
    """
    if bandwidth != "c_out":
        return torch.full_like(t, float(bandwidth))
    if min_gap > 0:
        t = torch.maximum(t, s + min_gap)
    _, c_out = fm.coefficients(s, t)
    return 1.0 / c_out.abs().clamp_min(torch.finfo(c_out.dtype).tiny)
