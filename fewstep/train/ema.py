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

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_p = list(self.net.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in net.parameters()], 1.0 - d)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)
        self.updates += 1
