"""The flow-matching loss on a flow map (Lipman et al. 2023; Liu et al. 2023; Tong et al. 2024).

With x ~ data, eps ~ N(0, sigma_d^2 I) and x_t = alpha_t x + sigma_t eps, the conditional velocity is
u = alpha'_t x + sigma'_t eps (= eps - x under OT-FM) and the loss is E ||v_theta(x_t, t) - u||^2
(mean over elements), where v_theta is the flow map's velocity from G(x_t, t, t). Under OT-FM with
the Euler-FM parameterisation v_theta = sigma_d G, so a pushforward step is an Euler step
(docs/imm.md §8).
"""
from __future__ import annotations

import torch

from fewstep.interpolants import Interpolant


def ot_pairing(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Permute ``noise`` so that pair i minimises the total squared distance (exact minibatch OT).

    Row i of the cost matrix is paired with column j[i] of the assignment (Tong et al. 2024, OT-CFM).
    """
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x.flatten(1).double(), noise.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return noise[torch.as_tensor(cols, device=noise.device)]  # rows come back sorted: row i -> cols[i]


class FlowMatching:
    """Flow matching as a fewstep objective: ``loss(flowmap, batch, step)``."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant

    def sample_t(self, n: int, device, dtype=torch.float32) -> torch.Tensor:
        """t ~ U(eps, T], or sigmoid(m + s n) clipped to [eps, T] (logit-normal).

        Uniform times are drawn as T - (T - eps) u with u in [0, 1), so t is never eps: with eps = 0 a time
        of exactly 0 (once in about 4000 batches of 4096 in float32) would divide by sigma_0 = 0 under the
        identity parameterisation."""
        ip, cfg = self.ip, self.cfg
        if cfg.time_sampling == "uniform":
            return ip.T - (ip.T - ip.eps) * torch.rand(n, device=device, dtype=dtype)
        t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, device=device, dtype=dtype))
        return t.clamp(ip.eps, ip.T)

    def loss(self, flowmap, batch, step: int):
        x = batch.x
        noise = self.ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        if self.cfg.minibatch_ot:
            noise = ot_pairing(x, noise)
        t = self.sample_t(x.shape[0], x.device, x.dtype)
        x_t = self.ip.interpolate(x, noise, t)
        if self.cfg.sigma > 0:
            x_t = x_t + self.cfg.sigma * torch.randn_like(x_t)
        target = self.ip.velocity(x, noise, t)
        cond = flowmap.drop_labels(batch.cond, self.cfg.label_dropout)
        loss = (flowmap.velocity(x_t, t, cond) - target).pow(2).mean()
        return loss, {}
