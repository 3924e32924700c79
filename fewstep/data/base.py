"""What a dataset returns: a :class:`Batch`.

A dataset is sampled, not iterated: ``sample(n, generator)`` returns a fresh :class:`Batch` drawn
with the given ``torch.Generator``, so training can reseed every step from (seed, rank, step) and a
resumed run sees exactly the data an uninterrupted one would. The contract itself is
:class:`fewstep.protocols.Dataset`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """Data ``x`` with per-dimension std about sigma_d, optional integer class labels ``cond``, and the
    augmentation labels [n, 9] of images augmented by EDM's pipeline (:mod:`fewstep.data.augment`), which
    the training loop hands the network on every pass of the step (None: not augmented)."""

    x: torch.Tensor
    cond: torch.Tensor | None = None
    augment: torch.Tensor | None = None

