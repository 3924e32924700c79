"""The IMM loss (Zhou, Ermon & Song 2025, §4, Alg. 3, Eq. 12-13, 67; docs/imm.md §4.9).

One step, for a batch of B = (B/M) x M samples:

1. per group of M consecutive samples draw t ~ U(eps, T), s ~ U(eps, t) and set r = r(s, t);
2. x_t = alpha_t x + sigma_t eps and x_r = alpha_r x + sigma_r eps with the same eps (DDIM reuse of x_t);
3. online pass y = f_theta(x_t, s, t) with grad; target pass y~ = f_theta-(x_r, s, r) without
   (theta- = stop-gradient of the current weights; r = s gives y~ = x_r, the interpolant itself);
4. per group the biased V-statistic MMD^2 over all M^2 pairs with bandwidth w~(s, t);
5. loss = mean over groups of w(s, t) MMD^2.

Two forward passes per step, whatever M is.
"""
from __future__ import annotations

import torch

from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant
from fewstep.kernels import mmd2
from fewstep.objectives import EMATarget, online_and_target
from fewstep.plugins import build_ref
from fewstep_imm.times import mapping_r, sample_times
from fewstep_imm.weighting import kernel_bandwidth, loss_weight

Tensor = torch.Tensor


class IMM:
    """Inductive Moment Matching as a fewstep objective: ``loss(flowmap, batch, step)``."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant
        self.kernel = build_ref(cfg.kernel, "kernels")
        self.small_kernel = build_ref(cfg.small_gap_kernel, "kernels") if cfg.small_gap > 0 else None
        self._ema = EMATarget(cfg.target_ema_decay) if cfg.target == "ema" else None

    # --- pieces, public so that tests and other objectives can use them ----------------------
    def times(self, n_groups: int, device) -> tuple[Tensor, Tensor, Tensor]:
        """(s, r, t) per group, float64 [n_groups]."""
        cfg = self.cfg
        s, t = sample_times(self.ip, n_groups, device)
        return s, mapping_r(self.ip, s, t, cfg.mapping, cfg.k, cfg.min_gap), t

    def weight(self, t: Tensor) -> Tensor:
        """w(s, t) of IMM Eq. 13 with this config's a, b and factor switches."""
        cfg = self.cfg
        return loss_weight(self.ip, t, cfg.a, cfg.b, cfg.weight_elbo, cfg.weight_alpha, cfg.weight_norm)

    def group_size(self, batch: int) -> int:
        m = self.cfg.group_size
        if batch % m:
            raise ConfigError(f"objective.group_size: {m} must divide the per-device batch ({batch})")
        return m

    def target_flowmap(self, fm: FlowMap, step: int | None = None) -> FlowMap:
        """theta-: the current weights (default), or their EMA when target = ema (moved once per step)."""
        return fm if self._ema is None else self._ema.flowmap(fm, step)

    # --- the loss ------------------------------------------------------------------------------
    def loss(self, fm: FlowMap, batch, step: int):
        cfg, ip = self.cfg, self.ip
        x, cond = batch.x, batch.cond
        B = x.shape[0]
        M = self.group_size(B)
        s, r, t = self.times(B // M, x.device)
        noise = ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        x_t = ip.interpolate(x, noise, t.repeat_interleave(M).to(x.dtype))
        x_r = ip.interpolate(x, noise, r.repeat_interleave(M).to(x.dtype))  # = DDIM(x_t, x, r, t): the same eps

        cond_online = fm.drop_labels(cond, cfg.label_dropout)
        cond_target = cond_online if cfg.target_labels == "same" else cond

        loss, mmd = self.matching_loss(fm, x_t, x_r, s, r, t, cond_online, cond_target, step)
        return loss, {"mmd2": mmd.detach().mean(), "r_is_s": (r == s).double().mean()}

    def matching_loss(self, fm: FlowMap, x_t: Tensor, x_r: Tensor, s: Tensor, r: Tensor, t: Tensor,
                      cond_online: Tensor | None = None, cond_target: Tensor | None = None,
                      step: int | None = None) -> tuple[Tensor, Tensor]:
        """mean_i w(s_i, t_i) MMD^2_i between y = f(x_t, s, t) and the stop-gradient y~ = f(x_r, s, r)
        (IMM Eq. 12, 67). x_t, x_r: [B, ...] in groups of M consecutive samples; s, r, t: one per
        group, [B/M]; ``step`` moves an EMA target once per optimiser step. Returns (loss, per-group MMD^2)."""
        cfg = self.cfg
        G = s.shape[0]
        M = x_t.shape[0] // G
        s_, r_, t_ = (v.to(x_t.dtype) for v in (s, r, t))  # grouped times: one per group of M
        y, y_tilde = online_and_target(fm, self.target_flowmap(fm, step), (x_t, s_, t_, cond_online),
                                       (x_r, s_, r_, cond_target), shared_dropout=cfg.shared_dropout,
                                       target_fp32=cfg.target_fp32)
        w_tilde = kernel_bandwidth(fm, s, t, cfg.bandwidth, cfg.bandwidth_min_gap).to(y.dtype)
        y, y_tilde = y.reshape(G, M, -1), y_tilde.reshape(G, M, -1)
        mmd = mmd2(self.kernel, y, y_tilde, w_tilde)
        if cfg.small_gap > 0:  # groups with t - s < small_gap: the smooth kernel (docs/imm.md §11)
            small = (t - s) < cfg.small_gap
            mmd = torch.where(small.to(mmd.device), mmd2(self.small_kernel, y, y_tilde, w_tilde), mmd)
        return (self.weight(t).to(y.dtype) * mmd).mean(), mmd

    # --- state (the EMA target), checkpointed by the training loop ---------------------------
    def state_dict(self) -> dict:
        return {} if self._ema is None else self._ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._ema is not None:
            self._ema.load_state_dict(state)
