"""The sCT loss on a flow map (Lu & Song 2024, Alg. 1; docs/objectives.md §4.2).

TrigFlow in fewstep terms (docs/objectives.md §4.1): the ``vp_cosine`` interpolant at time tau is TrigFlow
at t = pi tau / 2 (x_t = cos t x + sin t z, z ~ N(0, sigma_d^2 I)), and under ``simple_edm`` the flow map
f(x_tau, 0, tau) = cos t x_tau - sin t sigma_d G is sCM's consistency function with F = G. d/dt = (2/pi) d/dtau.

One step, for a batch of B samples of D elements each:

1. n ~ N(P_mean, P_std^2), t = arctan(e^n / sigma_d) (EDM sigma = sigma_d tan t is log-normal), tau = 2t/pi
   clipped to the interpolant's [eps, T]; z ~ N(0, sigma_d^2 I); x_t = cos t x + sin t z and
   dx_t/dt = cos t z - sin t x (drawn in this order: times, then noise, then label dropout);
2. one no-grad JVP of the current weights theta^- = sg(theta) (no EMA teacher), ``fm.jvp(x_t, 0, tau,
   (dx/dtau, 0, 1))``: F^- = G, dF^-/dt = (2/pi) dG/dtau, f^- and df^-/dt = (2/pi) df/dtau;
3. g = -cos^2 t (sigma_d F^- - dx_t/dt) - r cos t sin t (x_t + sigma_d dF^-/dt), r = min(1, step / H)
   (Alg. 1 step 4; at r = 1, g = cos t df^-/dt), then g <- g / (||g|| + c) per sample;
4. F_theta = G(x_t, 0, tau) with gradients, the RNG replayed so that it draws the JVP pass's dropout mask;
5. L = mean_i (e^{w_phi(t_i)} / D) ||F_theta - F^- - g||^2 - w_phi(t_i).

The 1/D factor is UNVERIFIED (the Alg. 1 transcript omits it; docs/objectives.md §4.2, §8 item 2): it only
shifts the learned w_phi by log D. Since F_theta = F^- in value, the theta-gradient is
-(2 e^{w} / D) (dF_theta/dtheta)^T g: the continuous-time consistency gradient with the prior weighting
1/(sigma_d tan t) folded into g's cos t factor (docs/objectives.md §4.2 "Why these factors").

The JVP takes the tangent (dx/dtau, 0, 1) as is, not sCM's cos t sin t pre-scaled one (its "JVP
rearrangement"): the two differ by a per-sample factor only, and with c_noise = t (time_scale pi/2) the
t-tangent of the time embedding is bounded by pi/2, so nothing overflows at t -> pi/2 (§4.7 item 4 concerns
EDM's c_noise = log sigma). F^- and g are formed in float32 (float64 for float64 data) under autocast.

Paper versus the reimplementation (no official code exists; docs/objectives.md §4.6): this follows Alg. 1.
NVlabs/FastGen's ``SCMModel`` also multiplies the loss by the prior weight 1/(sigma_d tan t) and normalises per
dimension; at w_phi's optimum an extra fixed t-weight changes nothing, and it is not done here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fewstep.data.base import Batch
from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant, bcast
from fewstep.objectives import RNGState
from fewstep_sct.weighting import LearnedWeighting

Tensor = torch.Tensor
D_DT = 2.0 / math.pi  # d/dt = (2/pi) d/dtau for TrigFlow time t = pi tau / 2


# --- the pieces of Alg. 1, as functions of tensors -----------------------------------------------
def sample_times(ip: Interpolant, n: int, p_mean: float, p_std: float, device=None) -> tuple[Tensor, Tensor]:
    """(tau, t) float64 [n]: n ~ N(P_mean, P_std^2), t = arctan(e^n / sigma_d) (sCM Alg. 1 step 1, so that
    EDM's sigma_d tan t is log-normal), tau = 2t/pi clipped to [eps, T], and t = pi tau / 2 again."""
    n_ = p_mean + p_std * torch.randn(n, device=device, dtype=torch.float64)
    t = torch.atan(torch.exp(n_) / ip.sigma_d)
    tau = (D_DT * t).clamp(ip.eps, ip.T)
    return tau, 0.5 * math.pi * tau


def warmup_factor(step: int, H: int) -> float:
    """r = min(1, step / H), the tangent warm-up of sCM Alg. 1 step 4 (H = 10k, Tables 3-4); H = 0 gives 1."""
    return 1.0 if H <= 0 else min(1.0, step / H)


def tangent(sigma_d: float, t: Tensor, x_t: Tensor, dx_dt: Tensor, F: Tensor, dF_dt: Tensor, r: float) -> Tensor:
    """g = -cos^2 t (sigma_d F^- - dx_t/dt) - r cos t sin t (x_t + sigma_d dF^-/dt) (sCM Alg. 1 step 4),
    t [B] TrigFlow times, the rest [B, ...]; dF/dt is the total derivative along the path. At r = 1 it is
    cos t df^-/dt for f = cos t x_t - sin t sigma_d F."""
    cos, sin = bcast(torch.cos(t), x_t), bcast(torch.sin(t), x_t)
    return -cos * cos * (sigma_d * F - dx_dt) - r * cos * sin * (x_t + sigma_d * dF_dt)


def tangent_from_jvp_f(sigma_d: float, t: Tensor, dx_dt: Tensor, F: Tensor, df_dt: Tensor, r: float) -> Tensor:
    """The same g from the flow map's own derivative (docs/objectives.md §4.2, last paragraph):
    g_r = -cos^2 t (sigma_d F^- - dx/dt) + r [cos t df^-/dt + cos^2 t (sigma_d F^- - dx/dt)]."""
    cos = bcast(torch.cos(t), dx_dt)
    diffusion = cos * cos * (sigma_d * F - dx_dt)
    return -diffusion + r * (cos * df_dt + diffusion)


def normalise_tangent(g: Tensor, c: float, kind: str = "normalise") -> Tensor:
    """sCM Alg. 1 step 5: g / (||g||_2 + c) per sample ('normalise', c = 0.1), or the alternatives of Fig. 5a:
    clip(g, -1, 1) elementwise ('clip') and the raw g ('none')."""
    if kind == "normalise":
        return g / bcast(torch.linalg.vector_norm(g.flatten(1), dim=1) + c, g)
    if kind == "clip":
        return g.clamp(-1.0, 1.0)
    if kind == "none":
        return g
    raise ValueError(f"unknown tangent normalisation {kind!r} (known: normalise, clip, none)")


def adaptive_loss(F_theta: Tensor, target: Tensor, w: Tensor) -> Tensor:
    """Per-sample (e^{w} / D) ||F_theta - target||^2 - w (sCM Alg. 1 step 6; the 1/D is UNVERIFIED), [B],
    with target = F^- + g under stop-gradient and D the elements of one sample. Minimised over w at
    e^{w} = D / ||F_theta - target||^2."""
    D = F_theta[0].numel()
    sq = (F_theta - target.detach()).pow(2).flatten(1).sum(1)
    return torch.exp(w) * sq / D - w


@dataclass
class Tangent:
    """What the no-grad JVP pass gives: F^- and dF^-/dt, f^- and df^-/dt, and the raw (un-normalised) g;
    all in the working precision, t [B] the TrigFlow times, dx_dt the conditional tangent."""

    t: Tensor
    dx_dt: Tensor
    F: Tensor
    dF_dt: Tensor
    f: Tensor
    df_dt: Tensor
    g: Tensor


# --- the objective ----------------------------------------------------------------------------------
class SCT:
    """sCT as a fewstep objective: ``loss(flowmap, batch, step)``. It owns w_phi(t) (Trainable: the run's
    optimiser steps it; Stateful: checkpointed through ``state_dict``)."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant
        self.w_phi: LearnedWeighting | None = (LearnedWeighting(cfg.weighting_features)
                                               if cfg.adaptive_weighting else None)

    # --- Trainable, Stateful -------------------------------------------------------------------------
    def trainable(self, device: torch.device) -> list[nn.Parameter]:
        """w_phi's parameters, moved to ``device`` (none without adaptive weighting)."""
        if self.w_phi is None:
            return []
        self.w_phi.to(device)
        return list(self.w_phi.parameters())

    def state_dict(self) -> dict:
        if self.w_phi is None:
            return {}
        return {"w_phi": {k: v.detach().clone() for k, v in self.w_phi.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Copy the checkpointed w_phi into the existing parameters (the optimiser holds them)."""
        if self.w_phi is not None and "w_phi" in state:
            self.w_phi.load_state_dict(state["w_phi"])

    # --- pieces, public so that tests can check them ---------------------------------------------------
    def sample_times(self, n: int, device=None) -> tuple[Tensor, Tensor]:
        """(tau, t) float64 [n] from this config's (P_mean, P_std): see :func:`sample_times`."""
        return sample_times(self.ip, n, self.cfg.p_mean, self.cfg.p_std, device)

    def weight(self, t: Tensor) -> Tensor:
        """w_phi(t) [B] (zeros without adaptive weighting)."""
        return torch.zeros_like(t) if self.w_phi is None else self.w_phi(t).to(t.dtype)

    def tangent(self, fm: FlowMap, x_t: Tensor, dx_dtau: Tensor, tau: Tensor, r: float,
                cond: Tensor | None = None) -> Tangent:
        """One no-grad JVP of f(x_t, 0, tau) along (dx/dtau, 0, 1) with the current weights, and the raw g of
        sCM Alg. 1 step 4 (the F, dF/dt form; :func:`tangent_from_jvp_f` gives the same from df/dt)."""
        with torch.no_grad():
            out = fm.jvp(x_t, 0.0, tau, (dx_dtau, 0.0, 1.0), cond)
            work = torch.promote_types(x_t.dtype, torch.float32)
            t = (0.5 * math.pi * tau).to(work)
            x, dx_dt = x_t.to(work), D_DT * dx_dtau.to(work)
            F, dF_dt = out.G.to(work), D_DT * out.dG.to(work)
            g = tangent(self.ip.sigma_d, t, x, dx_dt, F, dF_dt, r)
            return Tangent(t, dx_dt, F, dF_dt, out.f.to(work), D_DT * out.df.to(work), g)

    # --- the loss ------------------------------------------------------------------------------------
    def loss(self, fm: FlowMap, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor | float]]:
        """sCM Alg. 1 on one batch at training step ``step`` (which sets the warm-up r); see the module docstring."""
        cfg, ip = self.cfg, self.ip
        x = batch.x
        tau64, _ = self.sample_times(x.shape[0], x.device)
        tau = tau64.to(x.dtype)
        z = ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        x_t = ip.interpolate(x, z, tau)
        dx_dtau = ip.velocity(x, z, tau)  # (pi/2)(cos t z - sin t x)
        cond = fm.drop_labels(batch.cond, cfg.label_dropout)
        r = warmup_factor(step, cfg.warmup_steps)

        rng = RNGState(x.device) if cfg.shared_dropout else None
        tg = self.tangent(fm, x_t, dx_dtau, tau, r, cond)
        g = normalise_tangent(tg.g, cfg.tangent_c, cfg.tangent_normalisation)
        if rng is not None:
            rng.restore()  # the grad pass draws the JVP pass's dropout mask: F_theta = F^- in value
        F_theta = fm.G(x_t, 0.0, tau, cond).to(tg.F.dtype)
        w = self.weight(tg.t)
        loss = adaptive_loss(F_theta, tg.F + g, w).mean()
        logs = {"w_phi": w.detach().mean(), "warmup_r": r,
                "tangent_norm": torch.linalg.vector_norm(tg.g.flatten(1), dim=1).mean()}
        return loss, logs
