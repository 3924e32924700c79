"""fewstep from Python: what ``fewstep train``, ``eval`` and ``sample`` do, as functions.

>>> from fewstep.api import train_recipe, evaluate_run
>>> result = train_recipe("recipes/fm_toy.yaml", overrides=["train.steps=500"])
>>> evaluate_run(result.run_dir)["rows"]

This module composes the layers below it (run, train, eval); the bench and the CLI build on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from fewstep.errors import CheckpointError, ConfigError

__all__ = ["evaluate_run", "sample_run", "train_recipe"]


def train_recipe(path: str | Path | None, overrides: Sequence[str] = (), *, recipe=None,
                 run_dir: str | Path | None = None, fresh: bool = False, device: str | None = None,
                 progress: bool = True, stop_after: int | None = None, registries=None,
                 log: Callable[[str], None] | None = None, label: str | None = None):
    """Validate a recipe, pick (or resume) its run directory, train it and write sample grids and the
    loss curve (``samples/step_*.png``, ``loss.png``). Returns a :class:`fewstep.train.loop.TrainResult`.

    Resumes the newest unfinished run of the recipe that it can continue unless ``fresh``; when the
    group's newest run is unfinished and was trained with other settings, asks (ConfigError) instead of
    leaving it behind. ``run_dir`` names the run explicitly (refused if its checkpoint was trained with
    a different recipe). ``recipe`` passes an already validated recipe instead of reading ``path``
    (``fewstep bench`` does). SIGINT or SIGTERM finishes the step, writes a checkpoint and raises
    :class:`~fewstep.errors.TrainingInterrupted`.
    """
    from fewstep.config import load_recipe
    from fewstep.eval.grids import training_grids
    from fewstep.plugins import get_registries
    from fewstep.run.checkpoint import checkpoint_step, latest_checkpoint
    from fewstep.run.components import build_components, set_threads
    from fewstep.run.dist import from_env
    from fewstep.run.rundir import (
        blocking_changes,
        find_resumable,
        group_dir,
        load_init,
        new_run_dir,
        numeric_changes,
        unfinished_other,
        write_recipe,
    )
    from fewstep.train.loop import train

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
        other = None if fresh or run is not None else unfinished_other(group, recipe)
        if other is not None:
            left, changed, step, steps = other
            fields = f"{', '.join(changed[:5])} {'differs' if len(changed) == 1 else 'differ'}"
            raise ConfigError(f"{left} is unfinished (step {step} of {steps}) and was trained with other settings "
                              f"({fields}): resume it with `fewstep train {left}/recipe.yaml --run-dir {left}`, or "
                              "start a new run beside it with --fresh")
        run = run or new_run_dir(group)
    dist = from_env()  # several processes under torchrun: rank 0's choice of run directory holds
    try:
        run = Path(dist.broadcast(str(run)))
        ckpt = latest_checkpoint(run)
        if dist.main:
            log(f"{run}: resuming at step {checkpoint_step(ckpt)} of {recipe.train.steps}" if ckpt is not None
                else f"{run}: a new run of {recipe.train.steps} steps")
        set_threads(recipe.train.threads)
        comps = build_components(recipe, regs, dist.device(device))
        if recipe.train.init and ckpt is None:  # a new run starts from another's weights
            ckpt = load_init(comps.net, recipe.train.init)
            if dist.main:
                log(f"initialised from {ckpt} (EMA weights)")
        numeric = numeric_changes(run, recipe)
        if numeric and dist.main:
            log(f"resuming {run} with {', '.join(numeric)} changed: it continues from its checkpoint, "
                "but not bit for bit as an uninterrupted run would")
        if dist.main:
            write_recipe(run, recipe, regs)
        dist.barrier()
        on_samples = training_grids(comps, run, label=label or run.parent.name, log=log) if dist.main else None
        return train(comps, run, dist=dist, progress=progress, stop_after=stop_after, on_samples=on_samples,
                     label=label)
    finally:
        dist.shutdown()


def evaluate_run(path: str | Path, registries=None, *, steps: list[int] | None = None, n: int | None = None,
                 sampler: str | None = None, device: str | None = None, write: bool = True):
    """What ``fewstep eval`` does: evaluate a run's weights at each step count, write ``eval.json``
    into the run and return its contents (None on ranks other than 0 under torchrun)."""
    from fewstep.eval.evaluate import evaluate_run as _evaluate_run
    from fewstep.plugins import get_registries

    return _evaluate_run(path, registries or get_registries(), steps=steps, n=n, sampler=sampler, device=device,
                         write=write)


def sample_run(path: str | Path, steps: Sequence[int] = (1, 2, 4, 8), *, n: int = 2048, seed: int = 0,
               out: str | Path | None = None, sampler: str | None = None, device: str | None = None,
               registries=None) -> Path:
    """What ``fewstep sample`` does: a PNG of a run's samples at each step count (default
    ``RUN/samples/sample.png``); returns its path."""
    from fewstep.eval.evaluate import sampler_named
    from fewstep.eval.grids import sample_grid
    from fewstep.plugins import get_registries
    from fewstep.run.rundir import load_run

    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as {Path(out) / 'samples.png'}")
    regs = registries or get_registries()
    run_dir, comps, fm, step = load_run(path, regs, device)
    smp = sampler_named(comps, regs, sampler)
    target = Path(out) if out else run_dir / "samples" / "sample.png"
    return sample_grid(comps, fm, list(steps), n, seed, target, sampler=smp, title=f"{run_dir} step {step}")
