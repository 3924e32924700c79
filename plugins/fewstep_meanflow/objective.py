"""The MeanFlow loss on a flow map (Geng, Deng, Bai, Kolter & He 2025, arXiv 2505.13447; docs/objectives.md §3).

MeanFlow trains the average velocity u(z_t, r, t) = (1/(t - r)) int_r^t v(z_tau, tau) dtau, which in fewstep is
the Euler-FM flow map read at s = r: f(x_t, r, t) = x_t - (t - r) u, u = sigma_d G (docs/objectives.md §3.1).
Per sample, with x ~ data, eps ~ N(0, sigma_d^2 I) and (r, t) from :mod:`fewstep_meanflow.times`:

    z_t   = (1 - t) x + t eps,          v = eps - x                  (MF §3; conditional velocity)
    v~    = v, or the guided velocity of MF §4.2 / Eq. 21 (see :func:`guided_velocity`)
    (u, du/dt) = JVP of (z, r, t) -> u_theta(z, r, t) at (z_t, r, t) along (v~, 0, 1)   (MF §4, Table 1b)
    u_tgt = sg( v~ - (t - r) du/dt )                                 (MF §3, the MeanFlow identity)
    e     = ||u - u_tgt||^2, summed over every data dimension        (both official codes)
    w     = sg( 1 / (e + c)^p )                                      (MF §4 "adaptive loss weighting")
    loss  = mean_i w_i e_i

so the gradient is (1/B) sum_i 2 w_i (du_i/dtheta)^T (u_i - u_tgt,i): the tangent du/dt and the weight are
constants, so no second-order derivative is formed (MF §4: the stop-gradient on the target avoids
higher-order optimisation).

Implementation choices (docs/objectives.md §3.9-3.10):

- One forward-mode pass, :meth:`fewstep.flowmap.FlowMap.jvp`, taken with gradients enabled: its primal G is the
  u that the loss differentiates and its tangent dG is detached. This is what py-meanflow does
  (``torch.func.jvp`` then ``.detach()`` of the target). The tangent's graph is recorded and discarded, which
  costs memory but no extra pass; the alternative of §3.10 item 3 (a plain forward with gradients plus a
  no-grad JVP, replaying the RNG for dropout) costs one more forward. Forward-mode AD runs through DDP, so the
  gradient all-reduce fires (no hand all-reduce as in py-meanflow, §3.10 item 2), and attention uses the math
  kernel inside the JVP (§3.10 item 4).
- The tangent of G includes c_in(t)'s t-dependence and c_noise = time_scale t: recipes use ``time_scale: 1``
  so that the network sees raw t and t - r as both official codes do (§3.9).
- ``fp32`` (default on) runs the target, JVP and loss with autocast off, as py-meanflow does (§3.10 item 5).
- Classifier-free guidance in the target follows the JAX code (``guidance_fn``, ``cond_drop``): both guidance
  passes take the current weights at r = t, in evaluation mode (``train=False`` there), under no_grad; rows
  whose label was dropped keep v~ = v. Labels are dropped per row at random (as the PyTorch convention and
  fewstep's :meth:`~fewstep.flowmap.FlowMap.drop_labels`), not on the first rows of the batch as in JAX.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn

from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant, bcast
from fewstep_meanflow.times import sample_r_t

Tensor = torch.Tensor


def adaptive_weight(e: Tensor, p: float, c: float) -> Tensor:
    """w = 1 / (e + c)^p under stop-gradient (MF §4 "Adaptive loss weighting", Table 1e; py-meanflow divides the
    loss by (e + norm_eps)^norm_p). p = 0 is the plain squared L2 loss; w e ~ e^(1 - p) for e >> c."""
    return (e.detach() + c).pow(-p)


@contextmanager
def evaluation_mode(net: nn.Module) -> Iterator[None]:
    """The network in evaluation mode (no dropout) for the guidance passes (MF-jax ``v_fn(..., train=False)``)."""
    was = net.training
    net.train(False)
    try:
        yield
    finally:
        net.train(was)


def guided_velocity(fm: FlowMap, x_t: Tensor, t: Tensor, v: Tensor, cond: Tensor | None, dropped: Tensor | None,
                    omega: float, kappa: float, t_start: float = 0.0, t_end: float = 1.0) -> Tensor:
    """v~ = omega v + kappa u(z_t, t, t | c) + (1 - omega - kappa) u(z_t, t, t | null) for t in [t_start, t_end],
    v elsewhere and on rows whose label was dropped (MF §4.2 and App. Eq. 21; MF-jax ``guidance_fn``,
    ``cond_drop``; docs/objectives.md §3.5). u(z, t, t) is the instantaneous velocity (``fm.velocity``, = sigma_d G
    under Euler-FM) of the current weights, without gradient. Its fixed point is u(.|c) = omega' v_c +
    (1 - omega') u(.|null) with omega' = omega / (1 - kappa). omega = 1, kappa = 0 returns v (no network call).

    ``cond`` are the labels before dropout; ``dropped`` [B] marks the rows trained on the null class.
    """
    if omega == 1.0 and kappa == 0.0:
        return v
    if cond is None:
        raise ConfigError("objective.omega/kappa: classifier-free guidance in the MeanFlow target needs labelled "
                          "data (this batch has no labels); use omega: 1, kappa: 0")
    with torch.no_grad(), evaluation_mode(fm.net):
        u_null = fm.velocity(x_t, t, fm.null_labels(cond))
        u_cond = fm.velocity(x_t, t, cond) if kappa != 0.0 else torch.zeros_like(v)
    guided = omega * v + kappa * u_cond + (1.0 - omega - kappa) * u_null
    inside = (t >= t_start) & (t <= t_end)
    if dropped is not None:
        inside = inside & ~dropped
    return torch.where(inside.reshape((-1,) + (1,) * (v.ndim - 1)), guided.to(v.dtype), v)


def mean_flow_target(fm: FlowMap, x_t: Tensor, r: Tensor, t: Tensor, v_tilde: Tensor,
                     cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u, u_tgt): u = u_theta(z_t, r, t) = sigma_d G with gradients, and u_tgt = sg(v~ - (t - r) du/dt), du/dt
    the JVP of u along the tangent (v~, 0, 1) over (z, r, t) (MF §3-4, Table 1b; MF-pt ``forward_with_loss``
    passes (v, 1, 0) over its (z, t, r) argument order, the same direction). fewstep's s is MeanFlow's r.

    One forward-mode pass (:meth:`FlowMap.jvp`): its primal keeps the graph, its tangent is detached.
    """
    sigma_d = fm.interpolant.sigma_d
    out = fm.jvp(x_t, r, t, (v_tilde.detach(), 0.0, 1.0), cond)
    u = sigma_d * out.G
    du_dt = sigma_d * out.dG.detach()
    u_tgt = (v_tilde - bcast(t - r, x_t) * du_dt).detach()
    return u, u_tgt


class MeanFlow:
    """MeanFlow as a fewstep objective: ``loss(flowmap, batch, step)`` (module docstring)."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant

    def sample_r_t(self, n: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """(r, t) per :func:`fewstep_meanflow.times.sample_r_t` with this Config, clipped to [eps, T]."""
        c = self.cfg
        return sample_r_t(n, mean_t=c.logit_mean_t, std_t=c.logit_std_t, mean_r=c.logit_mean_r,
                          std_r=c.logit_std_r, share_r_neq_t=c.share_r_neq_t, eps=self.ip.eps, T=self.ip.T,
                          device=device, dtype=dtype)

    @staticmethod
    def _check(fm: FlowMap) -> None:
        """The map MeanFlow needs (also refused by the recipe check, for flow maps built by hand)."""
        if fm.param.name != "euler_fm":
            raise ConfigError(f"flowmap.parameterisation: MeanFlow's u = sigma_d G needs euler_fm "
                              f"(got {fm.param.name})")
        if fm.second_time == "none":
            raise ConfigError("flowmap.second_time: MeanFlow trains u(z_t, r, t): use stride or s, not none")

    def loss_at(self, fm: FlowMap, x: Tensor, noise: Tensor, r: Tensor, t: Tensor, labels: Tensor | None = None,
                dropped: Tensor | None = None) -> tuple[Tensor, dict]:
        """mean_i w_i ||u_i - u_tgt,i||^2 (MF §4, Alg. 1) for given data x, noise eps ~ N(0, sigma_d^2 I), times
        r <= t [B], labels (None: unconditional) and the rows ``dropped`` [B] to the null class: those are trained
        on the null label with the unguided target v~ = v (MF-jax ``cond_drop``)."""
        self._check(fm)
        cfg = self.cfg
        cond = labels
        if labels is not None and dropped is not None:
            cond = torch.where(dropped, fm.null_labels(labels), labels)
        fp32 = torch.autocast(x.device.type, enabled=False) if cfg.fp32 else nullcontext()
        with fp32:
            r, t = r.to(x.dtype), t.to(x.dtype)
            z_t = self.ip.interpolate(x, noise, t)
            v = self.ip.velocity(x, noise, t)  # = eps - x under OT-FM
            v_tilde = guided_velocity(fm, z_t, t, v, labels, dropped, cfg.omega, cfg.kappa, cfg.t_start, cfg.t_end)
            u, u_tgt = mean_flow_target(fm, z_t, r, t, v_tilde, cond)
            e = (u - u_tgt).pow(2).flatten(1).sum(1)
            w = adaptive_weight(e, cfg.p, cfg.c)
            loss = (w * e).mean()
        logs = {"mf_sq_err": e.detach().mean(), "mf_weight": w.mean(), "mf_r_neq_t": (r != t).to(e.dtype).mean()}
        return loss, logs

    def loss(self, fm: FlowMap, batch, step: int):
        """One step (MF Alg. 1). Draw order from the global RNG: (r, t) (:meth:`sample_r_t`), the noise, then
        the label dropout of :meth:`FlowMap.drop_labels` (each row independently with probability label_dropout)."""
        x = batch.x
        r, t = self.sample_r_t(x.shape[0], x.device, x.dtype)
        noise = self.ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        dropped = None
        if batch.cond is not None and self.cfg.label_dropout > 0:
            dropped = fm.drop_labels(batch.cond, self.cfg.label_dropout) != batch.cond
        return self.loss_at(fm, x, noise, r, t, batch.cond, dropped)
