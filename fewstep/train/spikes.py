"""Loss spikes: a step whose loss is far above its recent level, logged with its step.

Objectives that differentiate the flow map report spikes before they diverge (MeanFlow's reimplementations
spike, then NaN, at 60-100k CIFAR-10 steps; sCM's time embeddings spike the gradient norm;
docs/objectives.md §3.10, §4.7). The watch only reports: what to do is the user's (a lower lr, fp32,
tangent normalisation), and the run goes on.
"""
from __future__ import annotations

import math


class SpikeWatch:
    """``watch(step, loss)`` returns a one-line report when ``loss`` exceeds ``factor`` times the running
    mean of the losses before it (an exponential mean, decay ``decay``, spikes excluded), after
    ``warmup`` steps; otherwise None. ``factor`` None switches it off."""

    def __init__(self, factor: float | None = 10.0, warmup: int = 100, decay: float = 0.98):
        self.factor, self.warmup, self.decay = factor, warmup, decay
        self.mean: float | None = None
        self.seen = 0

    def __call__(self, step: int, loss: float) -> str | None:
        if self.factor is None or not math.isfinite(loss):
            return None
        self.seen += 1
        if self.mean is not None and self.seen > self.warmup and loss > self.factor * self.mean > 0:
            return (f"loss spike at step {step}: {loss:.4g}, {loss / self.mean:.1f}x its running mean "
                    f"{self.mean:.4g}")
        self.mean = loss if self.mean is None else self.decay * self.mean + (1 - self.decay) * loss
        return None
