"""The shortcut-model objective on a fewstep flow map (Frans, Hafner, Levine & Abbeel 2024, "One Step
Diffusion via Shortcut Models", ICLR 2025; docs/objectives.md §6).

Shortcut models learn the jump x_t -> x_s for any step size d = t - s. In fewstep's conventions
(t = 1 noise, t = 0 data, s <= t) the jump is the flow map f(x_t, s, t), and one step, for a batch
of B rows split into bootstrap rows and flow-matching rows, is:

- flow-matching rows (step size 0): t ~ U(eps, T), x_t = alpha_t x + sigma_t eps, and the
  flow map's velocity v(x_t, t) (from G(x_t, t, t)) regresses alpha'_t x + sigma'_t eps (the
  flow-matching term of the SC loss, in our time direction);
- bootstrap rows: a step t - s = (T - eps) / 2^j with j ~ U{0..levels-1}, t on that step's grid,
  m = (s + t)/2; the target is two half steps of the stop-gradient (EMA) network,
  y~ = f(f(x_t, m, t), s, m), and the online jump y = f(x_t, s, t) must match it (the self-consistency
  term of the SC loss: "two steps of d equal one step of 2d").

The loss is the mean over all B rows of the per-row mean squared error, the bootstrap rows measured
in velocity units: ||y - y~||^2 / (t - s)^2. Under the Euler-FM parameterisation
f(x_t, s, t) = x_t - (t - s) u(x_t, s, t) with u = sigma_d G, this is exactly Shortcut's
||u(x_t, t, 2d) - (u_1 + u_2)/2||^2 with u_1, u_2 the two half-step velocities; written on f it
holds for every parameterisation.

As in the SC code, the half-step point x' and the target velocity (x_t - y~)/(t - s) are clipped to
+-clip sigma_d (+-4 on SC's unit-scale latents), and labels are dropped on flow-matching rows only. Unlike
it, the flow-matching rows train the velocity at step size 0 exactly (SC-code trains its smallest level,
d = 1/128, on a t grid of 128 points), and the step size reaches the network as t - s (``second_time:
stride``), not as the level log2(1/d) (docs/objectives.md §6.1-6.2).
"""
from __future__ import annotations

import torch

from fewstep.interpolants import Interpolant, bcast
from fewstep.objectives import EMATarget

Tensor = torch.Tensor


class Shortcut:
    """Shortcut models as a fewstep objective: ``Shortcut(cfg, interpolant).loss(flowmap, batch, step)``."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant
        # fewstep's EMA target helper: copies the weights on first use, then follows them (SC's bootstrap_ema)
        self._ema = EMATarget(cfg.target_ema_decay) if cfg.target == "ema" else None

    # --- pieces ----------------------------------------------------------------------------------
    def n_bootstrap(self, batch: int) -> int:
        """Bootstrap rows in a batch of ``batch``: round(fraction B), at least one when the fraction is
        positive, and never the whole batch when it has two rows or more (SC: B / bootstrap_every)."""
        frac = self.cfg.bootstrap_fraction
        if frac <= 0:
            return 0
        n = max(1, round(frac * batch))
        return min(n, batch - 1) if batch > 1 else n

    def bootstrap_times(self, n: int, device) -> tuple[Tensor, Tensor, Tensor]:
        """(s, m, t) per bootstrap row, float64 [n]: t - s = (T - eps) / 2^j with j ~ U{0..levels-1};
        t = eps + k (t - s), k ~ U{1..2^j} on the grid (as in SC), else t ~ U(eps + (t - s), T); m = (s + t)/2."""
        ip, cfg = self.ip, self.cfg
        span = ip.T - ip.eps
        j = torch.randint(0, cfg.levels, (n,), device=device)
        step = span / torch.pow(2.0, j.to(torch.float64))
        if cfg.grid:
            k = torch.floor(torch.rand(n, device=device, dtype=torch.float64) * 2.0 ** j) + 1.0
            t = ip.eps + k * step
        else:
            t = ip.eps + step + (span - step) * torch.rand(n, device=device, dtype=torch.float64)
        s = (t - step).clamp_min(ip.eps)
        return s, 0.5 * (s + t), t

    def target_flowmap(self, fm, step: int | None = None):
        """The network of the two half steps: ``fm`` itself (used under no_grad), or ``fm`` around an
        EMA copy of its weights, moved once per optimiser step (SC's bootstrap_ema)."""
        return fm if self._ema is None else self._ema.flowmap(fm, step)

    def _clip(self, v: Tensor) -> Tensor:
        """v clipped to +-clip sigma_d (SC-code's jnp.clip(., -4, 4) on unit-scale data), or v."""
        c = self.cfg.clip
        return v if c is None else v.clamp(-c * self.ip.sigma_d, c * self.ip.sigma_d)

    # --- the loss --------------------------------------------------------------------------------
    def loss(self, fm, batch, step: int):
        """mean over rows of ||v(x_t, t) - (alpha'_t x + sigma'_t eps)||^2 (flow-matching rows) and
        ||f(x_t, s, t) - sg f(f(x_t, m, t), s, m)||^2 / (t - s)^2 (bootstrap rows), each a mean over
        elements (Frans et al. 2024, the SC loss; see the module docstring). Logs both parts."""
        ip = self.ip
        x, cond = batch.x, batch.cond
        B = x.shape[0]
        nb = self.n_bootstrap(B)
        noise = ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        errors, logs = [], {}

        if nb < B:  # flow-matching rows: step size 0
            xf, nf = x[nb:], noise[nb:]
            cf = None if cond is None else fm.drop_labels(cond[nb:], self.cfg.label_dropout)
            t = ip.T - (ip.T - ip.eps) * torch.rand(B - nb, device=x.device, dtype=x.dtype)  # as fm: never eps
            x_t = ip.interpolate(xf, nf, t)
            err = (fm.velocity(x_t, t, cf) - ip.velocity(xf, nf, t)).pow(2).flatten(1).mean(1)
            errors.append(err)
            logs["fm"] = err.detach().mean()

        if nb > 0:  # bootstrap rows: one step of t - s against two half steps
            xb, cb = x[:nb], None if cond is None else cond[:nb]
            s, m, t = (v.to(x.dtype) for v in self.bootstrap_times(nb, x.device))
            x_t = ip.interpolate(xb, noise[:nb], t)
            target = self.target_flowmap(fm, step)
            with torch.no_grad():
                y_tilde = target.f(self._clip(target.f(x_t, m, t, cb)), s, m, cb)
                if self.cfg.clip is not None:  # SC-code clips the target velocity (s1 + s2) / 2
                    dt = bcast(t - s, x_t)
                    y_tilde = x_t - dt * self._clip((x_t - y_tilde) / dt)
            y = fm.f(x_t, s, t, cb)
            err = ((y - y_tilde) / bcast(t - s, y)).pow(2).flatten(1).mean(1)
            errors.append(err)
            logs["self_consistency"] = err.detach().mean()

        return torch.cat(errors).mean(), logs

    # --- state: the EMA target, checkpointed with the run by the training loop -------------------
    def state_dict(self) -> dict:
        return {} if self._ema is None else self._ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._ema is not None:
            self._ema.load_state_dict(state)
