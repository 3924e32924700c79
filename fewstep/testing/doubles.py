"""Test doubles for plugin authors' tests: a small deterministic backbone and a flow map that records
its calls, so an objective's loss can be checked against a closed form computed from what the
network actually saw.

>>> from fewstep.testing import ProbeNet, RecordingFlowMap
>>> fm = RecordingFlowMap(ProbeNet(), OTFM(0.5), "euler_fm", "s")
>>> loss, _ = objective.loss(fm, Batch(x), 0)
>>> online, target = fm.f_calls          # inputs and outputs of each f call
>>> [c["grad"] for c in fm.net.calls]    # was each pass taken with gradients?
"""
from __future__ import annotations

import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import bcast

__all__ = ["ProbeNet", "RecordingFlowMap", "backbone_inputs", "rng_draws"]


class ProbeNet(torch.nn.Module):
    """G = tanh(A x + b t/1000 + c s/1000) (+ a label embedding), float64, seeded.

    Every call appends ``{"grad": grad enabled?, "draw": one torch.rand() draw, "cond": labels}`` to
    ``calls``: the draw shows whether two passes saw the same RNG state (shared dropout masks).
    """

    def __init__(self, dim: int = 2, num_classes: int | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))
        self.emb = torch.nn.Embedding(num_classes + 1, dim).double() if num_classes else None
        self.calls: list[dict] = []

    def forward(self, x, t, s=None, cond=None):
        self.calls.append({"grad": torch.is_grad_enabled(), "draw": torch.rand(()).item(), "cond": cond})
        s_term = 0.0 if s is None else s[:, None] * self.c / 1000
        out = torch.tanh(x @ self.A.T + t[:, None] * self.b / 1000 + s_term)
        return out if self.emb is None else out + self.emb(cond)


class RecordingFlowMap(FlowMap):
    """A flow map that keeps ``{"x_t", "s", "t", "out"}`` of every ``f`` call in ``f_calls``, with s
    and t one per sample ([B]) even when the objective passed grouped times ([G]; see FlowMap).

    ``with_net`` returns the flow map itself, so an objective's target pass is recorded too.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.f_calls: list[dict] = []

    def f(self, x_t, s, t, cond=None, guidance=1.0):
        out = super().f(x_t, s, t, cond, guidance)
        s_, t_ = (bcast(v, x_t.new_empty(x_t.shape[0])) for v in self._times(x_t, s, t))
        self.f_calls.append({"x_t": x_t, "s": s_.expand(x_t.shape[0]), "t": t_.expand(x_t.shape[0]), "out": out})
        return out

    def with_net(self, net):
        return self


def rng_draws(objective, interpolant, batch, parameterisation: str = "euler_fm") -> list[float]:
    """The RNG draw each backbone call of one ``objective.loss`` step saw (through a :class:`ProbeNet`):
    equal draws mean the passes share their dropout masks."""
    net = ProbeNet(batch.x.shape[-1])
    objective.loss(FlowMap(net, interpolant, parameterisation, "s"), batch, 0)
    return [c["draw"] for c in net.calls]


def backbone_inputs(n: int = 4, shape: tuple[int, ...] = (2,), seed: int = 1):
    """(x, t, s) for a backbone test: seeded data [n, *shape], network times in [0, 1000) (time_scale
    1000, as the flow map passes them) and s <= t."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 1000
    return torch.randn(n, *shape, generator=g), t, t * torch.rand(n, generator=g)
