"""The dataset contract shared by every data source.

A dataset is sampled, not iterated: ``sample(n, generator)`` returns a fresh :class:`Batch` drawn
with the given ``torch.Generator``, so training can reseed every step from (seed, rank, step) and a
resumed run sees exactly the data an uninterrupted one would.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch


class Batch(NamedTuple):
    """Data ``x`` with per-dimension std about sigma_d, and optional integer class labels ``cond``."""

    x: torch.Tensor
    cond: torch.Tensor | None = None


class Dataset(Protocol):
    kind: str  # "points" (2D scatter) or "images" (C, H, W)
    shape: tuple[int, ...]  # shape of one sample
    num_classes: int | None  # None for unconditional data

    def sample(self, n: int, generator: torch.Generator) -> Batch: ...
