"""The consistency-training loss on a flow map (iCT: Song & Dhariwal 2023; ECT: Geng et al. 2024).

The consistency function is the flow map with s at the data end, f_theta(x_t) = f(x_t, eps, t).
One step, for a batch of B samples (docs/peers.md §3.3-3.4):

1. draw a pair of noise levels sigma_r < sigma_t per sample and its weight lambda:
   - iCT: adjacent points (sigma_i, sigma_{i+1}) of the Karras grid of N(k) points, i from the
     discretised log-normal, lambda = 1 / (sigma_{i+1} - sigma_i);
   - ECT: ln sigma_t ~ N(P_mean, P_std^2), sigma_r = r(sigma_t, stage), lambda = 1 / (sigma_t - sigma_r);
   and convert both to the interpolant's times r < t (:func:`fewstep_ct.curriculum.sigma_to_time`);
2. x_t = alpha_t x + sigma_t eps and x_r = alpha_r x + sigma_r eps with the same eps;
3. online pass y = f(x_t, eps, t) with grad; target y~ = f(x_r, eps, r) under stop-gradient of the
   *current* weights (no EMA teacher), with the same dropout mask. Where r is the data end (t = eps)
   the target is x_r itself (= f(x_r, eps, eps) exactly: the flow map's boundary);
4. loss = mean_i lambda_i d(y_i, y~_i), d the pseudo-Huber distance on the whole sample.

Two forward passes per step. The curriculum reads the step counter and the run length it was sized
for; that length (K of iCT, the stage length of ECT) is resolved once from ``train.steps`` when the
run starts and kept in the objective's state, so a resumed run continues the same curriculum even when
``train.steps`` is extended. Every metrics line carries the curriculum's position: ``ct_N`` (iCT's
number of grid points N(k)) or ``ct_stage`` (ECT's stage).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant
from fewstep.objectives import online_and_target
from fewstep_ct.curriculum import (
    ect_r,
    ect_stage,
    ict_weight,
    index_probabilities,
    karras_sigmas,
    num_points,
    sample_lognormal_sigma,
    sigma_range,
    sigma_to_time,
)

Tensor = torch.Tensor
D64 = torch.float64
ICT_C_PER_SQRT_D = 0.00054  # iCT §3.3: c = 0.00054 sqrt(D) (CIFAR-10: 0.03)


# --- distances ---------------------------------------------------------------------------------
def pseudo_huber(diff: Tensor, c: float) -> Tensor:
    """Per-sample pseudo-Huber distance sqrt(||d||_2^2 + c^2) - c over all elements of a sample
    (Charbonnier et al. 1997; iCT §3.3, Pseudo-Huber metric). It is ~ ||d||^2 / (2c) for ||d|| << c and ~ ||d|| - c for
    ||d|| >> c; c = 0 is the L2 norm (ECT's default), whose gradient at d = 0 is taken as 0."""
    flat = diff.flatten(1)
    if c == 0:
        return torch.linalg.vector_norm(flat, dim=1)
    return torch.sqrt(flat.pow(2).sum(1) + c * c) - c


def squared_l2(diff: Tensor) -> Tensor:
    """Per-sample ||d||_2^2: the original CT distance with L2 (Song et al. 2023, §5), and the one that
    makes IMM with one particle and the energy kernel equal CT (IMM Lemma 1, App. G.1)."""
    return diff.flatten(1).pow(2).sum(1)


def consistency_distance(y: Tensor, y_tilde: Tensor, kind: str = "pseudo_huber", c: float = 0.0) -> Tensor:
    """d(y, y~) per sample, shape [B]: ``pseudo_huber`` with constant c, or ``squared_l2``."""
    if kind == "pseudo_huber":
        return pseudo_huber(y - y_tilde, c)
    if kind == "squared_l2":
        return squared_l2(y - y_tilde)
    raise ValueError(f"unknown distance {kind!r} (known: pseudo_huber, squared_l2)")


# --- the pair of times -------------------------------------------------------------------------
@dataclass
class Pairs:
    """One draw of (r, t) per sample: noise levels, interpolant times (float64 [B]) and the weight."""

    sigma_r: Tensor
    sigma_t: Tensor
    r: Tensor
    t: Tensor
    weight: Tensor
    at_data_end: Tensor  # bool [B]: r is the data end (t = eps), the target is x_r itself
    logs: dict


class ConsistencyTraining:
    """Consistency training (iCT, or ECT with ``mapping: ect``) as a fewstep objective:
    ``loss(flowmap, batch, step)``."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant
        try:
            self.sigma_lo, self.sigma_hi = sigma_range(interpolant, cfg.sigma_min, cfg.sigma_max)
        except ValueError as exc:
            raise ConfigError(f"objective.sigma_min/sigma_max: {exc}") from None
        self.total_steps: int | None = cfg.curriculum_steps
        self.stage_every: int | None = cfg.stage_every
        self._grids: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def setup(self, recipe) -> None:
        """Read the run's length: iCT's curriculum spans train.steps (unless curriculum_steps is set);
        ECT's stage is stage_images / train.batch_size steps (ECT: 3.2 Mimg), or train.steps / 8 when
        stage_images is null, unless stage_every is set. A resumed run then restores the values of its
        first session (:meth:`load_state_dict`)."""
        train, cfg = recipe.train, self.cfg
        if cfg.curriculum_steps is None:
            self.total_steps = train.steps
        if cfg.stage_every is None:
            per_stage = train.steps / 8 if cfg.stage_images is None else cfg.stage_images / train.batch_size
            self.stage_every = max(1, int(per_stage))

    # --- state: the run length the curriculum was sized for, kept on resume ----------------------
    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "stage_every": self.stage_every}

    def load_state_dict(self, state: dict) -> None:
        """Continue the curriculum of the checkpointed run (a checkpoint of fewstep 0.1.0 has none:
        the values from ``setup`` stand)."""
        if state.get("total_steps") is not None:
            self.total_steps = int(state["total_steps"])
        if state.get("stage_every") is not None:
            self.stage_every = int(state["stage_every"])

    # --- pieces, public so that tests and other objectives can use them ----------------------
    def grid(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """(sigmas [n], times [n], index probabilities [n-1]) of the n-point Karras grid on
        [sigma_lo, sigma_hi]; times[0] = eps, the data end. Cached per n."""
        if n not in self._grids:
            sig = karras_sigmas(n, self.sigma_lo, self.sigma_hi, self.cfg.rho)
            times = sigma_to_time(self.ip, sig, self.sigma_lo)
            self._grids[n] = (sig, times, index_probabilities(sig, self.cfg.p_mean, self.cfg.p_std))
        return self._grids[n]

    def num_points(self, step: int) -> int:
        """N(k) of iCT's curriculum at this step."""
        if self.total_steps is None:
            raise ConfigError("objective.curriculum_steps: unknown run length; set it, or build the objective "
                              "through a recipe (setup reads train.steps)")
        return num_points(step, self.total_steps, self.cfg.s0, self.cfg.s1)

    def stage(self, step: int) -> int:
        """ECT's curriculum stage at this step."""
        if self.stage_every is None:
            raise ConfigError("objective.stage_every: unknown run length; set it, or build the objective "
                              "through a recipe (setup reads train.steps)")
        return ect_stage(step, self.stage_every)

    def draw(self, n: int, step: int, device=None) -> Pairs:
        """(r, t) and the weight for n samples at this step, per the configured mapping."""
        if self.cfg.mapping == "ict":
            return self._draw_ict(n, step, device)
        return self._draw_ect(n, step, device)

    def _draw_ict(self, n: int, step: int, device) -> Pairs:
        """iCT: i ~ discretised log-normal on the N(k)-point grid; (r, t) = (t_i, t_{i+1}),
        lambda = 1 / (sigma_{i+1} - sigma_i) (iCT §3.1, §3.4-3.5)."""
        big_n = self.num_points(step)
        sig, times, probs = self.grid(big_n)
        i = torch.multinomial(probs, n, replacement=True)
        sig_r, sig_t = sig[i], sig[i + 1]
        pairs = Pairs(sig_r, sig_t, times[i], times[i + 1], ict_weight(sig_r, sig_t), i == 0,
                      {"ct_N": torch.tensor(float(big_n))})
        return self._to(pairs, device)

    def _draw_ect(self, n: int, step: int, device) -> Pairs:
        """ECT: ln sigma_t ~ N(P_mean, P_std^2) clamped to [sigma_lo, sigma_hi]; sigma_r = r(sigma_t),
        clamped up to the data end sigma_lo; lambda = 1 / (sigma_t - sigma_r) (ECT; locuslab/ect training/loss.py).

        Rows with sigma_t at the data end (a clamped draw) have r = t = eps and zero loss; their weight
        is set to 0 instead of 1/0."""
        stage = self.stage(step)
        cfg = self.cfg
        sig_t = sample_lognormal_sigma(n, cfg.p_mean, cfg.p_std).clamp(self.sigma_lo, self.sigma_hi)
        raw = ect_r(sig_t, stage, cfg.q, cfg.k, cfg.b)
        at_end = raw <= self.sigma_lo
        sig_r = torch.where(at_end, torch.full_like(raw, self.sigma_lo), raw)
        gap = sig_t - sig_r
        weight = torch.where(gap > 0, 1.0 / gap.clamp_min(torch.finfo(D64).tiny), torch.zeros_like(gap))
        t, r = sigma_to_time(self.ip, sig_t, self.sigma_lo), sigma_to_time(self.ip, sig_r, self.sigma_lo)
        pairs = Pairs(sig_r, sig_t, r, t, weight, at_end, {"ct_stage": torch.tensor(float(stage))})
        return self._to(pairs, device)

    @staticmethod
    def _to(p: Pairs, device) -> Pairs:
        if device is None:
            return p
        return Pairs(*(v.to(device) for v in (p.sigma_r, p.sigma_t, p.r, p.t, p.weight, p.at_data_end)), p.logs)

    def huber_c(self, dim: int) -> float:
        """c of the pseudo-Huber distance: the configured value, else 0.00054 sqrt(D) for iCT (§3.3)
        and 0 for ECT (its default)."""
        if self.cfg.huber_c is not None:
            return float(self.cfg.huber_c)
        return ICT_C_PER_SQRT_D * dim ** 0.5 if self.cfg.mapping == "ict" else 0.0

    # --- the loss ------------------------------------------------------------------------------
    def pair_loss(self, fm: FlowMap, x_t: Tensor, x_r: Tensor, r: Tensor, t: Tensor, weight: Tensor,
                  cond: Tensor | None = None, at_data_end: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """mean_i lambda_i d(f(x_t, eps, t)_i, sg f(x_r, eps, r)_i) (iCT §3; ECT's loss with c = 0 and
        lambda = 1/(t - r)): the two passes (the second under stop-gradient of the current weights, with
        the same dropout mask), the configured distance and the per-sample weights ``weight`` [B].
        Where ``at_data_end`` the target is x_r itself. Returns (loss, per-sample weighted distances [B])."""
        dtype = x_t.dtype
        s = torch.full(t.shape, self.ip.eps, dtype=dtype, device=x_t.device)
        t, r = t.to(dtype), r.to(dtype)
        y, y_tilde = online_and_target(fm, fm, (x_t, s, t, cond), (x_r, s, r, cond),
                                       shared_dropout=self.cfg.shared_dropout)
        if at_data_end is not None:
            y_tilde = torch.where(at_data_end.reshape((-1,) + (1,) * (x_r.ndim - 1)), x_r, y_tilde)
        d = consistency_distance(y, y_tilde, self.cfg.distance, self.huber_c(x_t[0].numel()))
        per_sample = weight.to(dtype) * d
        return per_sample.mean(), per_sample

    def loss(self, fm: FlowMap, batch, step: int):
        x, ip = batch.x, self.ip
        pairs = self.draw(x.shape[0], step, x.device)
        noise = ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        x_t = ip.interpolate(x, noise, pairs.t.to(x.dtype))
        x_r = ip.interpolate(x, noise, pairs.r.to(x.dtype))  # the same eps: x_r = DDIM(x_t, x, r, t)
        cond = fm.drop_labels(batch.cond, self.cfg.label_dropout)
        loss, _ = self.pair_loss(fm, x_t, x_r, pairs.r, pairs.t, pairs.weight, cond, pairs.at_data_end)
        logs = {k: v.to(x.device) for k, v in pairs.logs.items()}
        logs["at_data_end"] = pairs.at_data_end.double().mean()
        return loss, logs
