"""The objective toolkit: what IMM, CT and third-party objectives share, and no one objective's maths.

- :func:`online_and_target`: the two passes of IMM and consistency training, y = f(x_t, s, t) with
  gradients and y~ = f(x_r, s, r) under stop-gradient, sharing one dropout mask (:class:`RNGState`);
- :class:`EMATarget`: a stop-gradient target network that follows the online weights as an EMA,
  checkpointed through the objective's ``state_dict`` (see :class:`fewstep.protocols.Stateful`).

These lived in :mod:`fewstep.flowmap` before fewstep 0.1.1; the old import path keeps working, with a
DeprecationWarning, until 0.2.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from fewstep.networks.wrappers import unwrap

if TYPE_CHECKING:  # pragma: no cover - types only
    from fewstep.flowmap import FlowMap

Tensor = torch.Tensor

__all__ = ["EMATarget", "RNGState", "online_and_target"]


class RNGState:
    """The global RNG state of a device, saved so that a later pass can replay the same draws."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def online_and_target(fm: FlowMap, target: FlowMap, online: tuple, target_args: tuple, *,
                      shared_dropout: bool = True, target_fp32: bool = False) -> tuple[Tensor, Tensor]:
    """y = fm.f(*online) with gradients and y~ = target.f(*target_args) under stop-gradient, each
    args tuple being (x, s, t, cond): the two passes of IMM and consistency training.

    With ``shared_dropout`` the RNG is replayed so both passes draw the same dropout masks (the
    trick of ECT-style CT code; docs/imm.md §4.8); ``target_fp32`` runs the target with
    autocast off.
    """
    x = online[0]
    rng = RNGState(x.device) if shared_dropout else None
    y = fm.f(*online)
    fp32 = torch.autocast(x.device.type, enabled=False) if target_fp32 else nullcontext()
    with torch.no_grad(), fp32:
        if rng is not None:
            rng.restore()
        x_r, *rest = target_args
        y_tilde = target.f(x_r.float() if target_fp32 else x_r, *rest)
    return y, y_tilde.to(y.dtype)


class EMATarget:
    """A stop-gradient target network theta- that follows the online weights as an EMA:
    theta- <- d theta- + (1 - d) theta at every call after the first (which copies theta).

    For objectives whose target is an EMA of the weights (IMM's ``target: ema`` variant, shortcut
    models, CM/iCT-style teachers). Its weights go into the run's checkpoint through the objective's
    ``state_dict``; loaded before the network exists, they are applied on first use.
    """

    def __init__(self, decay: float):
        self.decay = float(decay)
        self.net: nn.Module | None = None
        self._pending: dict | None = None
        self._step: int | None = None

    def flowmap(self, fm: FlowMap, step: int | None = None) -> FlowMap:
        """Update theta- towards fm's weights and return the flow map around theta-.

        With ``step`` (the training step the objective's ``loss`` is given), theta- moves once per optimiser
        step, at its first call: with gradient accumulation ``loss`` runs once per shard, and an update per
        call would make the decay d^shards. Without it, every call updates."""
        if self.net is not None and step is not None and step == self._step:
            self.net.train(fm.net.training)
            return fm.with_net(self.net)
        self._step = step
        if self.net is None:  # (the plain module, not a DDP or torch.compile wrapper)
            self.net = copy.deepcopy(unwrap(fm.net)).requires_grad_(False)
            if self._pending is not None:  # a resumed run continues the checkpointed EMA
                self.net.load_state_dict(self._pending)
                self._pending = None
                self._lerp(fm.net)
        else:
            self._lerp(fm.net)
        self.net.train(fm.net.training)
        return fm.with_net(self.net)

    @torch.no_grad()
    def _lerp(self, online: nn.Module) -> None:
        """theta- <- d theta- + (1 - d) theta for the parameters; buffers (running statistics) are copied,
        as the evaluation EMA does (fewstep.train.ema)."""
        for p_t, p in zip(self.net.parameters(), online.parameters()):
            p_t.lerp_(p.detach(), 1.0 - self.decay)
        for b_t, b in zip(self.net.buffers(), online.buffers()):
            b_t.copy_(b)

    def state_dict(self) -> dict:
        if self.net is None:
            return {} if self._pending is None else {"target": self._pending}
        return {"target": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        target = state.get("target")
        if target is None:
            return
        if self.net is not None:
            self.net.load_state_dict(target)
        else:
            self._pending = target
