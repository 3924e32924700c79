"""Backbones. Every backbone is called as ``net(x, t, s, cond)`` and knows nothing of objectives:
x is already scaled by c_in(t), t is c_noise(t) = 1000 t, s is the scaled second time input (or
None when the flow map has none) and cond holds integer class labels (or None)."""
from __future__ import annotations

from dataclasses import dataclass

# DiT sizes (hidden, depth, heads), DiT Table 1 (Peebles & Xie 2023): S 33M, B 130M, L 458M, XL 675M
# parameters at patch 2 on 32x32x4 latents. Here (no torch) so that recipe validation can use it.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


@dataclass(frozen=True)
class NetworkSpec:
    """What a network factory is told about the data: ``factory(cfg, spec)``."""

    shape: tuple[int, ...]  # one sample, e.g. (2,) or (C, H, W)
    num_classes: int | None = None  # None: unconditional
    second_time: bool = True  # build the embedding branch for the second time input
