"""Sample grids: PNGs of samples at several step counts beside the data, and the ones drawn during training."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from fewstep.eval.evaluate import sample
from fewstep.protocols import ImageData
from fewstep.run.components import Components, flowmap_for
from fewstep.run.records import read_metrics

__all__ = ["GRID_SAMPLES", "image_cap", "sample_grid", "training_grids"]

GRID_SAMPLES = 2048  # points per scatter panel of the training grids (their image panels show 64)


def image_cap(width: int) -> int:
    """The most images a mosaic panel shows: 256, fewer for large images (a mosaic at most 2048 pixels wide)."""
    side = max(1, min(16, 2048 // max(1, width)))
    return side * side


def sample_grid(comps: Components, fm, steps: list[int], n: int, seed: int, path: Path, sampler=None,
                title: str | None = None, max_images: int = 64) -> Path:
    """A PNG of samples at each step count beside the data: scatter plots of ``n`` points, or mosaics of
    min(n, max_images, :func:`image_cap`) images."""
    from fewstep.eval.plots import image_grid, scatter_grid

    sampler = sampler or comps.sampler
    data = comps.dataset
    images = isinstance(data, ImageData) and data.kind == "images"
    n = min(n, max_images, image_cap(data.shape[-1])) if images else n
    panels = []
    for k in steps:
        x, nfe, _ = sample(comps, fm, sampler, k, n, seed)
        panels.append((f"{sampler.name} {k} step{'s' if k > 1 else ''} (NFE {nfe})", data.to_uint8(x) if images else x))
    ref = data.sample(n, torch.Generator().manual_seed(seed + 1)).x
    if images:
        return image_grid(panels, path, reference=data.to_uint8(ref), title=title, per_panel=n)
    return scatter_grid(panels, path, reference=ref, title=title)


def training_grids(comps: Components, run: Path, *, label: str, log: Callable[[str], None] | None = None
                   ) -> Callable[[int, torch.nn.Module], Path]:
    """The ``on_samples(step, ema_net)`` callback of the training loop: a grid of the EMA weights'
    samples at 1, 2, 4, 8 steps (those of ``eval.steps``) in ``samples/step_<step>.png`` (returned, for the
    run's loggers), and the loss curve so far in ``loss.png``."""
    ev = comps.recipe.eval
    steps = [k for k in (1, 2, 4, 8) if k in ev.steps] or ev.steps[:4]

    def on_samples(step: int, ema_net: torch.nn.Module) -> Path:
        from fewstep.eval.plots import loss_curve

        ema_net.eval()
        out = sample_grid(comps, flowmap_for(comps, ema_net), steps, GRID_SAMPLES, ev.seed,
                          run / "samples" / f"step_{step:07d}.png", title=f"{label} step {step} (EMA)")
        if log:
            log(f"samples: {out}")
        records = read_metrics(run)
        if records:
            loss_curve(records, run / "loss.png", title=f"{label}: training loss")
        return out

    return on_samples
