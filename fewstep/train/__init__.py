"""Training: ``train_recipe`` is what ``fewstep train`` runs, usable from Python too.

>>> from fewstep.train import train_recipe
>>> result = train_recipe("recipes/fm_toy.yaml", overrides=["train.steps=500"])
"""
from __future__ import annotations

import json
from pathlib import Path

from fewstep.errors import CheckpointError


def train_recipe(path: str | Path | None, overrides=(), *, recipe=None, run_dir: str | Path | None = None,
                 fresh: bool = False, device: str | None = None, progress: bool = True,
                 stop_after: int | None = None, registries=None, log=None, label: str | None = None):
    """Validate a recipe, pick (or resume) its run directory, train it and write sample grids.

    Resumes the newest unfinished run of the recipe unless ``fresh``; ``run_dir`` names the run
    explicitly (refused if its checkpoint was trained with a different recipe). ``recipe`` passes
    an already validated recipe instead of reading ``path`` (``fewstep bench`` does).
    """
    from fewstep.config import load_recipe
    from fewstep.plugins import get_registries
    from fewstep.train.components import build_components, set_threads
    from fewstep.train.dist import from_env
    from fewstep.train.rundir import blocking_changes, find_resumable, group_dir, new_run_dir, write_recipe

    regs = registries or get_registries()
    log = log or (lambda msg: None)
    recipe = recipe if recipe is not None else load_recipe(path, overrides, regs)
    if run_dir is not None:
        run = Path(run_dir)
        changed = blocking_changes(run, recipe)
        if changed:
            raise CheckpointError(f"{run}: its checkpoint was trained with a different recipe "
                                  f"(differs in {', '.join(changed[:5])}); use --fresh for a new run")
    else:
        group = group_dir(recipe, path)
        run = None if fresh else find_resumable(group, recipe)
        run = run or new_run_dir(group)
    dist = from_env()  # several processes under torchrun: rank 0's choice of run directory holds
    try:
        run = Path(dist.broadcast(str(run)))
        set_threads(recipe.train.threads)
        comps = build_components(recipe, regs, dist.device(device))
        if dist.main:
            write_recipe(run, recipe, regs)
        dist.barrier()
        return _train(comps, run, recipe, dist, progress, stop_after, label, log)
    finally:
        dist.shutdown()


def _train(comps, run, recipe, dist, progress, stop_after, label, log):
    """Train with sample grids and a loss curve at the end (rank 0 draws them)."""
    from fewstep.eval.evaluate import sample_grid
    from fewstep.eval.plots import loss_curve
    from fewstep.train.components import flowmap_for
    from fewstep.train.loop import train

    steps = [k for k in (1, 2, 4, 8) if k in recipe.eval.steps] or recipe.eval.steps[:4]

    def on_samples(step: int, ema_net) -> None:
        ema_net.eval()
        fm = flowmap_for(comps, ema_net)
        out = sample_grid(comps, fm, steps, 2048, recipe.eval.seed, run / "samples" / f"step_{step:07d}.png",
                          title=f"{label or run.parent.name} step {step} (EMA)")
        log(f"samples: {out}")
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if records:
            loss_curve(records, run / "loss.png")

    return train(comps, run, dist=dist, progress=progress, stop_after=stop_after, on_samples=on_samples, label=label)
