"""Samplers over any flow map, and their time schedules.

A sampler knows the flow map's interface (f, velocity, interpolant) and nothing of the objective
that trained it. Every sampler runs from the prior at T down a descending grid
``ts = [T, ..., eps]`` of n + 1 times; the flow map counts backbone evaluations (NFE).
"""
from __future__ import annotations

from typing import Sequence

import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant

Tensor = torch.Tensor


# --- schedules ---------------------------------------------------------------------------------
def uniform_schedule(ip: Interpolant, n: int, t_max: float | None = None) -> Tensor:
    """t_i = T + (i / n)(eps - T), i = 0..n: uniform in t (IMM §7.3, ImageNet default); ``t_max`` replaces T."""
    return torch.linspace(ip.T if t_max is None else t_max, ip.eps, n + 1, dtype=torch.float64)


def eta_schedule(ip: Interpolant, n: int, mid_etas: Sequence[float], t_max: float | None = None) -> Tensor:
    """T, then the times whose eta_t are ``mid_etas`` (descending), then eps.

    IMM's 2-step CIFAR-10 sampler goes T -> eta^-1(1.4) -> eps, i.e. 0.994 -> 0.5833 -> 0.006 under
    OT-FM (IMM App. I.2). Used when ``len(mid_etas) == n - 1``; other step counts fall back to uniform.
    """
    if len(mid_etas) != n - 1:
        return uniform_schedule(ip, n, t_max)
    mids = ip.eta_inv(torch.tensor(sorted(mid_etas, reverse=True), dtype=torch.float64))
    ts = torch.cat([torch.tensor([ip.T if t_max is None else t_max], dtype=torch.float64), mids,
                    torch.tensor([ip.eps], dtype=torch.float64)])
    if not bool((ts[:-1] > ts[1:]).all()):
        raise ValueError(f"mid_etas {list(mid_etas)} must lie strictly inside (eta(eps), eta(T))")
    return ts


def edm_schedule(ip: Interpolant, n: int, rho: float = 7.0, t_max: float | None = None) -> Tensor:
    """EDM's rho-schedule in eta: eta_i = (eta_max^(1/rho) + i/n (eta_min^(1/rho) - eta_max^(1/rho)))^rho,
    then t = eta^-1 (Karras et al. 2022 Eq. 5; IMM App. I.2). eta_min = eta(eps) may be 0."""
    start = ip.T if t_max is None else t_max
    t_ends = torch.tensor([start, ip.eps], dtype=torch.float64)
    e_max, e_min = ip.eta(t_ends).tolist()
    i = torch.arange(n + 1, dtype=torch.float64) / n
    eta = (e_max ** (1 / rho) + i * (e_min ** (1 / rho) - e_max ** (1 / rho))) ** rho
    ts = ip.eta_inv(eta)
    ts[0], ts[-1] = start, ip.eps  # exact endpoints despite rounding
    return ts


SCHEDULES = ("uniform", "eta", "edm")


def make_schedule(ip: Interpolant, n: int, kind: str = "uniform", *, mid_etas: Sequence[float] = (1.4,),
                  rho: float = 7.0, sigma_max: float | None = None) -> Tensor:
    """The descending grid of n + 1 times for an n-step sampler (float64), from T, or from the time of EDM
    noise level ``sigma_max`` (sigma_d eta_t) when that is earlier, down to eps."""
    if n < 1:
        raise ValueError(f"need at least one step (got {n})")
    t_max = None if sigma_max is None else min(ip.T, float(ip.from_edm_sigma(torch.tensor(float(sigma_max),
                                                                                           dtype=torch.float64))))
    if kind == "uniform":
        return uniform_schedule(ip, n, t_max)
    if kind == "eta":
        return eta_schedule(ip, n, mid_etas, t_max)
    if kind == "edm":
        return edm_schedule(ip, n, rho, t_max)
    raise ValueError(f"unknown schedule {kind!r} (known: {', '.join(SCHEDULES)})")


# --- samplers ----------------------------------------------------------------------------------
class Sampler:
    """Base class: ``sampler(flowmap, x, ts, cond, generator)`` maps x at ts[0] to a sample at ts[-1].

    ``guidance`` is the classifier-free guidance weight w on the backbone output G (IMM Eq. 14;
    1 = off, 2 NFE per step otherwise); it acts only when labels are given.
    """

    name = "sampler"

    def __init__(self, schedule: str = "uniform", mid_etas: Sequence[float] = (1.4,), rho: float = 7.0,
                 guidance: float = 1.0, sigma_max: float | None = None):
        self.schedule_kind, self.mid_etas, self.rho = schedule, tuple(mid_etas), rho
        self.guidance = float(guidance)
        self.sigma_max = sigma_max

    def schedule(self, ip: Interpolant, n: int) -> Tensor:
        return make_schedule(ip, n, self.schedule_kind, mid_etas=self.mid_etas, rho=self.rho, sigma_max=self.sigma_max)

    def __call__(self, fm: FlowMap, x: Tensor, ts: Tensor, cond: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


class Pushforward(Sampler):
    """x <- f(x, t_{i+1}, t_i) at every step: one NFE per step (IMM Alg. 2/4)."""

    name = "pushforward"

    def __call__(self, fm, x, ts, cond=None, generator=None):
        for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
            x = fm.f(x, s, t, cond, self.guidance)
        return x


class Restart(Sampler):
    """Jump to eps with x~ = f(x, eps, t_i), then re-noise to t_{i+1} with fresh prior noise
    (multistep consistency sampling; IMM Alg. 5, Song et al. 2023 Alg. 1)."""

    name = "restart"

    def __call__(self, fm, x, ts, cond=None, generator=None):
        ip = fm.interpolant
        times = ts.tolist()
        for i, t in enumerate(times[:-1]):
            x0 = fm.f(x, times[-1], t, cond, self.guidance)
            if i == len(times) - 2:
                return x0
            t_next = ip.times(times[i + 1], x0)
            noise = ip.prior(tuple(x0.shape), generator, x0.device, x0.dtype)
            x = ip.interpolate(x0, noise, t_next)
        return x


class Euler(Sampler):
    """x <- x + (t_{i+1} - t_i) v(x, t_i), v = the flow map's velocity G(x, t, t): one NFE per step."""

    name = "euler"

    def __call__(self, fm, x, ts, cond=None, generator=None):
        for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
            x = x + (s - t) * fm.velocity(x, t, cond, self.guidance)
        return x


class Heun(Sampler):
    """Heun's second-order method (Karras et al. 2022 Alg. 1 without churn): two NFE per step,
    one for a step that ends at t = 0."""

    name = "heun"

    def __call__(self, fm, x, ts, cond=None, generator=None):
        for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
            v = fm.velocity(x, t, cond, self.guidance)
            x_euler = x + (s - t) * v
            if s <= 0.0:
                x = x_euler
            else:
                x = x + (s - t) * 0.5 * (v + fm.velocity(x_euler, s, cond, self.guidance))
        return x


@torch.no_grad()
def generate(fm: FlowMap, sampler: Sampler, n_steps: int, n: int, shape: Sequence[int], *,
             generator: torch.Generator | None = None, cond: Tensor | None = None,
             device: torch.device | str = "cpu", batch_size: int = 4096) -> tuple[Tensor, int]:
    """Draw n samples with an n_steps sampler from x_T ~ N(0, sigma_d^2 I); returns (samples, NFE).

    NFE is backbone evaluations per sample. Noise comes from ``generator`` in batch order, so a
    fixed seed gives the same samples whatever the objective or sampler.
    """
    if n < 1:
        raise ValueError(f"need at least one sample (got n={n})")
    ip = fm.interpolant
    ts = sampler.schedule(ip, n_steps)
    out, nfe = [], 0
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = ip.prior((m, *shape), generator, device)
        c = None if cond is None else cond[start:start + m]
        before = fm.nfe
        out.append(sampler(fm, x, ts, c, generator))
        nfe = fm.nfe - before
    return torch.cat(out), nfe


def build(cls):
    """Factory for a sampler class from its config (schedule, mid_etas, rho, guidance, sigma_max)."""
    def factory(cfg):
        return cls(cfg.schedule, cfg.mid_etas, cfg.rho, cfg.guidance, cfg.sigma_max)
    factory.__name__ = f"build_{cls.name}"
    return factory


build_pushforward, build_restart = build(Pushforward), build(Restart)
build_euler, build_heun = build(Euler), build(Heun)
