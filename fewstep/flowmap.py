"""The flow map f(x_t, s, t): one wrapper through which every model is trained and sampled.

    g(x_t, s, t) = c_skip(t) x_t + c_out(t) G(c_in(t) x_t, c_noise(t), e2(s, t), cond)
    f(x_t, s, t) = DDIM(x_t, g(x_t, s, t), s, t) = c_skip(s, t) x_t + c_out(s, t) G(...)

with c_in(t) = 1 / (sigma_d sqrt(alpha_t^2 + sigma_t^2)), c_noise(t) = 1000 t, and a second time
input e2 that is absent, s, or the stride t - s (IMM §4.1-4.2, App. C.5, I.1; docs/imm.md §3).
FM trains g(x_t, t, t), CT trains f(x_t, eps, t), IMM trains the full two-time map.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from fewstep.errors import NonFiniteTangent
from fewstep.interpolants import OTFM, Interpolant, bcast
from fewstep.networks.attention import differentiable_attention
from fewstep.networks.forward_mode import one_product_layers
from fewstep.protocols import GroupedTimes

Tensor = torch.Tensor
SecondTime = Literal["none", "s", "stride"]


class Parameterisation:
    """Coefficients of g and f for one parameterisation (IMM §4.2, App. C.5)."""

    name = "base"

    def g(self, ip: Interpolant, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip(t), c_out(t)) of the x-prediction g."""
        raise NotImplementedError

    def f(self, ip: Interpolant, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip(s, t), c_out(s, t)) of f = DDIM(x_t, g, s, t)."""
        raise NotImplementedError

    def df_ds(self, ip: Interpolant, t: Tensor) -> tuple[Tensor, Tensor]:
        """d/ds of the f coefficients at s = t; the ODE velocity is dc_skip x_t + dc_out G."""
        raise NotImplementedError


class Identity(Parameterisation):
    """g = G: c_skip(s,t) = sigma_s/sigma_t, c_out(s,t) = alpha_s - (sigma_s/sigma_t) alpha_t."""

    name = "identity"

    def g(self, ip, t):
        return torch.zeros_like(t), torch.ones_like(t)

    def f(self, ip, s, t):
        ratio = ip.sigma(s) / ip.sigma(t)
        return ratio, ip.alpha(s) - ratio * ip.alpha(t)

    def df_ds(self, ip, t):
        k = ip.d_sigma(t) / ip.sigma(t)
        return k, ip.d_alpha(t) - k * ip.alpha(t)


class SimpleEDM(Parameterisation):
    """Simple-EDM (IMM §4.2): g = alpha_t/(alpha^2+sigma^2) x_t - sigma_d sigma_t/sqrt(alpha^2+sigma^2) G;
    f: c_skip = (alpha_s alpha_t + sigma_s sigma_t)/(alpha_t^2+sigma_t^2),
    c_out = -sigma_d (alpha_s sigma_t - sigma_s alpha_t)/sqrt(alpha_t^2+sigma_t^2)."""

    name = "simple_edm"

    def g(self, ip, t):
        a, s_ = ip.alpha(t), ip.sigma(t)
        n2 = a * a + s_ * s_
        return a / n2, -ip.sigma_d * s_ / torch.sqrt(n2)

    def f(self, ip, s, t):
        a_t, s_t, a_s, s_s = ip.alpha(t), ip.sigma(t), ip.alpha(s), ip.sigma(s)
        n2 = a_t * a_t + s_t * s_t
        return (a_s * a_t + s_s * s_t) / n2, -ip.sigma_d * (a_s * s_t - s_s * a_t) / torch.sqrt(n2)

    def df_ds(self, ip, t):
        a, s_, da, ds = ip.alpha(t), ip.sigma(t), ip.d_alpha(t), ip.d_sigma(t)
        n2 = a * a + s_ * s_
        return (da * a + ds * s_) / n2, -ip.sigma_d * (da * s_ - ds * a) / torch.sqrt(n2)


class EulerFM(Parameterisation):
    """Euler-FM, OT-FM only (IMM App. C.5): g = x_t - sigma_d t G, f = x_t - sigma_d (t - s) G,
    an Euler step of the ODE with velocity sigma_d G."""

    name = "euler_fm"

    def g(self, ip, t):
        return torch.ones_like(t), -ip.sigma_d * t

    def f(self, ip, s, t):
        return torch.ones_like(t), -ip.sigma_d * (t - s)

    def df_ds(self, ip, t):
        return torch.zeros_like(t), ip.sigma_d * torch.ones_like(t)


PARAMETERISATIONS: dict[str, type[Parameterisation]] = {
    p.name: p for p in (Identity, SimpleEDM, EulerFM)
}


@dataclass
class FlowMapJVP:
    """f(x_t, s, t), the backbone output G, and their directional derivatives along one tangent."""

    f: Tensor
    df: Tensor
    G: Tensor
    dG: Tensor


class FlowMap(nn.Module):
    """Wraps a backbone ``net(x, t, s, cond)`` into g, f and the ODE velocity.

    Parameters
    ----------
    net : backbone taking (c_in x_t, time_scale t, second time input or None, cond).
    interpolant : the :class:`~fewstep.interpolants.Interpolant` (owns sigma_d).
    parameterisation : "identity", "simple_edm" or "euler_fm" (OT-FM only).
    second_time : "none", "s" (IMM CIFAR-10) or "stride" t - s (IMM DiT-XL headline; App. I.1).
    time_scale : c in c_noise(t) = c t (IMM Table 5: 1000).
    num_classes : class count of conditional data; label ``num_classes`` is the null class that
        label dropout and classifier-free guidance use (None: unconditional).

    ``nfe`` counts backbone evaluations per sample (a guided call counts two).
    """

    def __init__(self, net: nn.Module, interpolant: Interpolant, parameterisation: str = "euler_fm",
                 second_time: SecondTime = "s", time_scale: float = 1000.0, num_classes: int | None = None):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {parameterisation!r} "
                             f"(known: {', '.join(PARAMETERISATIONS)})")
        if parameterisation == "euler_fm" and not isinstance(interpolant, OTFM):
            raise ValueError("parameterisation 'euler_fm' needs the ot_fm interpolant")
        if second_time not in ("none", "s", "stride"):
            raise ValueError(f"second_time must be none, s or stride (got {second_time!r})")
        self.net = net
        # the backbone embeds each distinct time once (IMM's M particles share theirs): see _net_times
        self.grouped = isinstance(net, GroupedTimes) and bool(net.grouped_times)
        self.interpolant = interpolant
        self.param = PARAMETERISATIONS[parameterisation]()
        self.second_time = second_time
        self.time_scale = float(time_scale)
        self.num_classes = num_classes
        self.nfe = 0
        self.augment_labels: Tensor | None = None  # of the batch being trained on: see augmented()

    @contextmanager
    def augmented(self, labels: Tensor | None) -> Iterator[FlowMap]:
        """Hand the augmentation labels [B, 9] of the batch being trained on (EDM's pipeline,
        :mod:`fewstep.data.augment`) to the backbone on every pass until the block ends, target passes
        included (:meth:`with_net` keeps them); outside it, as at sampling, the backbone gets none (zeros)."""
        before, self.augment_labels = self.augment_labels, labels
        try:
            yield self
        finally:
            self.augment_labels = before

    def _times(self, x: Tensor, *ts: Tensor | float) -> list[Tensor]:
        """Times as float tensors on x's device (never Python floats): [B] per sample, or [G] for
        groups of B/G consecutive samples sharing their times ([1]: the whole batch, as in sampling)."""
        out = []
        for t in ts:
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
            t = t.reshape(1) if t.ndim == 0 else t
            if t.ndim != 1 or x.shape[0] % t.shape[0]:
                raise ValueError(f"times of shape {tuple(t.shape)} do not group a batch of {x.shape[0]}")
            out.append(t)
        return out

    def _net_times(self, v: Tensor | None, n: int) -> Tensor | None:
        """Grouped times go to backbones that declare ``grouped_times`` (they embed each distinct
        time once: IMM's M particles share theirs, a sampling step shares one); others get [n]."""
        if v is None or v.shape[0] == n or self.grouped:
            return v
        return v.expand(n) if v.shape[0] == 1 else v.repeat_interleave(n // v.shape[0])

    def c_in(self, t: Tensor) -> Tensor:
        """c_in(t) = 1 / (sigma_d sqrt(alpha_t^2 + sigma_t^2)) (IMM §4.2): unit-variance input."""
        ip = self.interpolant
        return 1.0 / (ip.sigma_d * torch.sqrt(ip.alpha(t) ** 2 + ip.sigma(t) ** 2))

    def null_labels(self, cond: Tensor) -> Tensor:
        """The null class (index ``num_classes``) in cond's shape: label dropout and CFG's branch."""
        if self.num_classes is None:
            raise ValueError("this flow map is unconditional (num_classes is None): no null class")
        return torch.full_like(cond, self.num_classes)

    def drop_labels(self, cond: Tensor | None, p: float) -> Tensor | None:
        """Label dropout for classifier-free guidance (Ho & Salimans 2022): each label becomes the null
        class with probability p (drawn from the global RNG, which the loop seeds per step)."""
        if cond is None or p <= 0:
            return cond
        return torch.where(torch.rand(cond.shape, device=cond.device) < p, self.null_labels(cond), cond)

    def G(self, x_t: Tensor, s: Tensor | float, t: Tensor | float, cond: Tensor | None = None,
          guidance: float = 1.0) -> Tensor:
        """The raw backbone output for (x_t, s, t).

        With labels and ``guidance`` w != 1, classifier-free guidance acts on G, before the
        c_skip/c_out combination: G_w = G(null) + w (G(c) - G(null)), one batched call of 2B
        (IMM Eq. 14, App. E). w = 1 is no guidance.
        """
        s, t = self._times(x_t, s, t)
        e2 = {"none": None, "s": s, "stride": t - s}[self.second_time]
        e2 = None if e2 is None else self.time_scale * e2
        u, c_noise = bcast(self.c_in(t), x_t) * x_t, self.time_scale * t
        n = x_t.shape[0]
        c_noise, e2 = self._net_times(c_noise, n), self._net_times(e2, n)
        aug = self.augment_labels
        if aug is not None and aug.shape[0] != n:
            raise ValueError(f"augmentation labels for {aug.shape[0]} samples but a network call on {n}: an objective "
                             "that passes part of its batch cannot train on augmented images (data.augment: 0)")
        if guidance == 1.0 or cond is None:
            self.nfe += 1
            return self.net(u, c_noise, e2, cond) if aug is None else self.net(u, c_noise, e2, cond, augment_labels=aug)
        self.nfe += 2
        two = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
        extra = {} if aug is None else {"augment_labels": two(aug)}
        out = self.net(two(u), two(c_noise), two(e2), torch.cat([cond, self.null_labels(cond)]), **extra)
        g_cond, g_null = out.chunk(2)
        return g_null + guidance * (g_cond - g_null)

    def g(self, x_t: Tensor, s: Tensor | float, t: Tensor | float, cond: Tensor | None = None,
          guidance: float = 1.0) -> Tensor:
        """Clean-data prediction g(x_t, s, t) = c_skip(t) x_t + c_out(t) G."""
        s, t = self._times(x_t, s, t)
        c_skip, c_out = self.param.g(self.interpolant, t)
        return bcast(c_skip, x_t) * x_t + bcast(c_out, x_t) * self.G(x_t, s, t, cond, guidance)

    def f(self, x_t: Tensor, s: Tensor | float, t: Tensor | float, cond: Tensor | None = None,
          guidance: float = 1.0) -> Tensor:
        """Flow map f(x_t, s, t) = DDIM(x_t, g(x_t, s, t), s, t): the model's sample at time s <= t."""
        s, t = self._times(x_t, s, t)
        c_skip, c_out = self.param.f(self.interpolant, s, t)
        return bcast(c_skip, x_t) * x_t + bcast(c_out, x_t) * self.G(x_t, s, t, cond, guidance)

    def velocity(self, x_t: Tensor, t: Tensor | float, cond: Tensor | None = None,
                 guidance: float = 1.0) -> Tensor:
        """ODE velocity v(x_t, t) = d f(x_t, s, t)/ds at s = t, using G(x_t, t, t).

        f(x_t, s, t) = x_s moves along the ODE, so its s-derivative at s = t is dx_t/dt.

        For Euler-FM this is sigma_d G; in general alpha'_t g + sigma'_t (x_t - alpha_t g)/sigma_t.
        """
        (t,) = self._times(x_t, t)
        d_skip, d_out = self.param.df_ds(self.interpolant, t)
        return bcast(d_skip, x_t) * x_t + bcast(d_out, x_t) * self.G(x_t, t, t, cond, guidance)

    def jvp(self, x_t: Tensor, s: Tensor | float, t: Tensor | float,
            tangent: tuple[Tensor | float, Tensor | float, Tensor | float], cond: Tensor | None = None,
            guidance: float = 1.0) -> FlowMapJVP:
        """f(x_t, s, t) and G with their derivatives along ``tangent`` = (dx, ds, dt), in one forward-mode
        pass: df = d/de f(x_t + e dx, s + e ds, t + e dt) at e = 0, the JVP that MeanFlow, sCT and TVM
        differentiate the flow map by (Geng et al. 2025 Eq. 8; Lu & Song 2024 Alg. 1; docs/objectives.md §0).

        ds and dt are a number or a tensor shaped like the times (per sample or per group). c_in(t),
        c_noise(t) = time_scale t and the f coefficients are differentiated with the backbone, so a
        ``time_scale`` of 1000 scales every t-derivative of the embeddings by 1000.

        Gradients flow through all four outputs (reverse-over-forward, as TVM's loss needs); a target
        that needs none calls this under ``torch.no_grad()``. Forward-mode AD (``torch.autograd.forward_ad``)
        runs through a DDP-wrapped backbone, so its gradient all-reduce still fires, which ``torch.func.jvp``
        cannot do. Attention runs on plain ops here only (:mod:`fewstep.networks.attention`): the fused kernels
        have no forward-mode rule, and torch's softmax rule cannot be back-propagated through.
        """
        s, t = self._times(x_t, s, t)
        dx, ds, dt = tangent
        dx = torch.zeros_like(x_t) if not torch.is_tensor(dx) and dx == 0 else torch.as_tensor(dx).to(x_t)
        ds, dt = (torch.as_tensor(d, dtype=v.dtype, device=v.device).expand_as(v).clone()
                  for d, v in ((ds, s), (dt, t)))
        with fwAD.dual_level(), differentiable_attention(), one_product_layers():
            x_d, s_d, t_d = fwAD.make_dual(x_t, dx), fwAD.make_dual(s, ds), fwAD.make_dual(t, dt)
            G = self.G(x_d, s_d, t_d, cond, guidance)
            c_skip, c_out = self.param.f(self.interpolant, s_d, t_d)
            f = bcast(c_skip, x_d) * x_d + bcast(c_out, x_d) * G
            (f, df), (G, dG) = fwAD.unpack_dual(f), fwAD.unpack_dual(G)
        zero = lambda p, d: torch.zeros_like(p) if d is None else d  # noqa: E731  (no dependence: a zero tangent)
        out = FlowMapJVP(f, zero(f, df), G, zero(G, dG))
        if not torch.isfinite(out.dG).all():  # a guard: MeanFlow, sCM and TVM users meet NaN tangents
            raise NonFiniteTangent(self._first_nonfinite_tangent(x_t, s, t, (dx, ds, dt), cond, guidance))
        return out

    def _first_nonfinite_tangent(self, x_t, s, t, tangent, cond, guidance) -> str:
        """Re-run the JVP with hooks on every backbone layer and name the first whose output tangent is
        not finite while its inputs' are: where the NaN or inf arises (docs/objectives.md §3.10, §4.7)."""
        from fewstep.networks.wrappers import unwrap

        found: list[str] = []

        def finite(v) -> bool:
            d = fwAD.unpack_dual(v).tangent if torch.is_tensor(v) else None
            return d is None or bool(torch.isfinite(d).all())

        def hook(name):
            def check(module, inputs, output):
                outs = output if isinstance(output, (tuple, list)) else (output,)
                if not found and all(finite(v) for v in inputs) and not all(finite(v) for v in outs):
                    found.append(f"{name or 'the backbone'} ({type(module).__name__})")
            return check

        handles = [m.register_forward_hook(hook(n)) for n, m in unwrap(self.net).named_modules()]
        try:
            with torch.no_grad(), fwAD.dual_level(), differentiable_attention(), one_product_layers():
                dx, ds, dt = tangent
                self.G(fwAD.make_dual(x_t, dx), fwAD.make_dual(s, ds), fwAD.make_dual(t, dt), cond, guidance)
        finally:
            for h in handles:
                h.remove()
        where = found[0] if found else "the flow map's coefficients (c_in, c_skip, c_out), not a backbone layer"
        return f"the flow map's JVP tangent is not finite: it first appears in {where}"

    def with_net(self, net: nn.Module) -> "FlowMap":
        """The same flow map around other weights (an EMA copy, a target network)."""
        out = FlowMap(net, self.interpolant, self.param.name, self.second_time, self.time_scale, self.num_classes)
        out.augment_labels = self.augment_labels
        return out

    def coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip(s, t), c_out(s, t)) of f; IMM's kernel bandwidth is 1 / |c_out(s, t)|."""
        return self.param.f(self.interpolant, s, t)


_MOVED = {"RNGState": "fewstep.objectives", "online_and_target": "fewstep.objectives",
          "EMATarget": "fewstep.objectives", "unwrap": "fewstep.networks.wrappers",
          "unwrap_ddp": "fewstep.networks.wrappers"}


def __getattr__(name: str):
    """Objective and training tools that used to live here, for one release (fewstep 0.2 removes them)."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"fewstep.flowmap.{name} moved to {_MOVED[name]}.{name}; the old path goes in fewstep 0.2",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'fewstep.flowmap' has no attribute {name!r}")
