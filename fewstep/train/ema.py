"""Exponential moving average of the network weights, used for evaluation only."""
from __future__ import annotations

import copy

import torch


class EMA:
    """theta_ema <- d theta_ema + (1 - d) theta with d = min(decay, (1 + n) / (10 + n)) after n updates.

    The warm-up (diffusers' EMAModel default) keeps short runs from evaluating near-initial
    weights; with decay 0.9999 (IMM Table 5) it is inactive after ~90k updates.
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0
        # The tensor lists, walked once (walking the module tree costs as much as the update itself).
        self._ema = (list(self.net.parameters()), list(self.net.buffers()))
        self._src: tuple | None = None

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        d = self.current_decay()
        if self._src is None or self._src[0] is not net:
            self._src = (net, [p.detach() for p in net.parameters()], list(net.buffers()))
        _, params, buffers = self._src
        torch._foreach_lerp_(self._ema[0], params, 1.0 - d)
        for b_ema, b in zip(self._ema[1], buffers):
            b_ema.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        """The update count (the weights themselves go to ``ema.safetensors``)."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
