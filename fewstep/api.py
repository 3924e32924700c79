"""fewstep from Python: what ``fewstep train``, ``eval`` and ``sample`` do, as functions.

>>> import fewstep
>>> result = fewstep.train_recipe("recipes/fm_toy.yaml", ["train.steps=500"])
>>> run = fewstep.load_run(result.run_dir)        # EMA weights of the latest checkpoint
>>> x = run.sample(1000, steps=2)
>>> run.evaluate(steps=[1, 2])["rows"]

This module composes the layers below it (run, train, eval); the bench and the CLI build on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from fewstep.errors import CheckpointError, ConfigError

__all__ = ["Run", "evaluate_run", "load_run", "sample_run", "save_samples", "train_recipe"]


def train_recipe(path: str | Path | None, overrides: Sequence[str] = (), *, recipe=None,
                 run_dir: str | Path | None = None, fresh: bool = False, device: str | None = None,
                 progress: bool = True, stop_after: int | None = None, registries=None,
                 log: Callable[[str], None] | None = None, label: str | None = None, group: str | None = None):
    """Validate a recipe, pick (or resume) its run directory, train it and write sample grids and the
    loss curve (``samples/step_*.png``, ``loss.png``). Returns a :class:`fewstep.train.loop.TrainResult`.

    Resumes the newest unfinished run of the recipe that it can continue unless ``fresh``; when the
    group's newest run is unfinished and was trained with other settings, asks (ConfigError) instead of
    leaving it behind. ``run_dir`` names the run explicitly (refused if its checkpoint was trained with
    a different recipe). ``recipe`` passes an already validated recipe instead of reading ``path``
    (``fewstep bench`` does; it also names the runs' ``group`` for the loggers). SIGINT or SIGTERM finishes
    the step, writes a checkpoint and raises :class:`~fewstep.errors.TrainingInterrupted`.
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
    from fewstep.run.tracking import Tracker
    from fewstep.train.loop import train

    regs = registries or get_registries()
    tracker_warn = {"warn": log} if log else {}  # a failed logger: one line through log, else a warning
    log = log or (lambda msg: None)
    recipe = recipe if recipe is not None else load_recipe(path, overrides, regs)
    tracker = Tracker.build(recipe.train.loggers, regs, **tracker_warn)  # a missing logger package: before any file
    if run_dir is not None:
        run = Path(run_dir)
        changed = blocking_changes(run, recipe)
        if changed:
            raise CheckpointError(f"{run}: its checkpoint was trained with a different recipe "
                                  f"(differs in {', '.join(changed[:5])}); use --fresh for a new run")
    else:
        group = group_dir(recipe, path, overrides)
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
                     label=label, tracker=tracker if dist.main else None, group=group)
    finally:
        dist.shutdown()


WEIGHTS = ("ema", "online")  # the EMA of the weights (what papers evaluate) or the trained weights themselves


def _use_ema(weights: str | None) -> bool | None:
    if weights is None:
        return None
    if weights not in WEIGHTS:
        raise ConfigError(f"weights: {weights!r} is not one of {', '.join(WEIGHTS)}")
    return weights == "ema"


def evaluate_run(path: str | Path, registries=None, *, steps: list[int] | None = None, n: int | None = None,
                 sampler: str | None = None, device: str | None = None, write: bool = True,
                 checkpoint: int | None = None, weights: str | None = None, overrides: Sequence[str] = ()):
    """What ``fewstep eval`` does: evaluate a run's weights at each step count, write ``eval.json``
    into the run and return its contents (None on ranks other than 0 under torchrun).

    ``checkpoint`` picks a kept checkpoint by its step (default: the latest), ``weights`` "ema" or
    "online" (default: the recipe's eval.use_ema), and ``overrides`` (``sampler.*``, ``eval.*``) change
    how it is sampled and measured."""
    from fewstep.eval.evaluate import evaluate_run as _evaluate_run
    from fewstep.plugins import get_registries

    return _evaluate_run(path, registries or get_registries(), steps=steps, n=n, sampler=sampler, device=device,
                         write=write, checkpoint=checkpoint, use_ema=_use_ema(weights), overrides=overrides)


def sample_run(path: str | Path, steps: Sequence[int] = (1, 2, 4, 8), *, n: int = 2048, seed: int = 0,
               out: str | Path | None = None, sampler: str | None = None, device: str | None = None,
               registries=None, checkpoint: int | None = None, weights: str | None = None,
               overrides: Sequence[str] = (), force: bool = False) -> Path:
    """What ``fewstep sample`` does: a PNG of a run's samples at each step count (default
    ``RUN/samples/sample_step_<checkpoint>.png``, never overwritten unless ``force``: a free name beside
    it instead); returns its path. ``checkpoint``, ``weights`` and ``overrides`` as for :func:`evaluate_run`."""
    from fewstep.eval.grids import sample_grid

    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as {Path(out) / 'samples.png'}")
    run = load_run(path, checkpoint=checkpoint, weights=weights, device=device, overrides=overrides,
                   registries=registries)
    target = Path(out) if out else run.path / "samples" / f"sample_step_{run.step:07d}.png"
    if not force:
        target = _free_name(target)
    title = f"{run.path} step {run.step} ({'EMA' if run.weights == 'ema' else 'online weights'})"
    return sample_grid(run.components, run.flowmap, list(steps), n, seed, target, sampler=run.sampler(sampler),
                       title=title, max_images=256)


def save_samples(path: str | Path, steps: Sequence[int], *, n: int, seed: int = 0, npz: str | Path | None = None,
                 png_dir: str | Path | None = None, sampler: str | None = None, device: str | None = None,
                 checkpoint: int | None = None, weights: str | None = None, overrides: Sequence[str] = (),
                 registries=None) -> list[str]:
    """``n`` samples of a run at each step count (the seeds of :func:`sample_run`), saved as ``npz`` (one
    array ``steps_<k>`` per step count: images uint8 [n, H, W, C] as ADM's evaluation suite reads them,
    points float32 [n, D]) and/or one PNG per image under ``png_dir/<k>step/``; returns what it wrote, a
    line each."""
    import numpy as np
    from PIL import Image

    from fewstep.files import atomic_path
    from fewstep.protocols import ImageData

    run = load_run(path, checkpoint=checkpoint, weights=weights, device=device, overrides=overrides,
                   registries=registries)
    images = isinstance(run.dataset, ImageData) and run.dataset.kind == "images"
    if png_dir is not None and not images:
        raise ConfigError(f"--save-png: {run.recipe.data.name} is not image data; use --save-npz")
    arrays, lines = {}, []
    for k in steps:
        x = run.sample(n, k, sampler=sampler, seed=seed, images=images)
        arrays[f"steps_{k}"] = x.permute(0, 2, 3, 1).numpy() if images else x.flatten(1).float().numpy()
        if png_dir is not None:
            folder = Path(png_dir) / f"{k}step"
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(arrays[f"steps_{k}"]):
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:06d}.png")
            lines.append(f"wrote {n} PNGs to {folder}")
    if npz is not None:
        with atomic_path(npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        lines.append(f"wrote {npz} ({', '.join(f'{k}: {tuple(v.shape)}' for k, v in arrays.items())})")
    return lines


def _free_name(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3``, ... when it is taken."""
    k, free = 2, path
    while free.exists():
        free, k = path.with_name(f"{path.stem}-{k}{path.suffix}"), k + 1
    return free


class Run:
    """A trained run, loaded to sample and evaluate from Python (:func:`load_run`).

    >>> run = fewstep.load_run("runs/imm_toy")                # the newest run of the group, EMA weights
    >>> x = run.sample(1000, steps=2)                         # [1000, *shape] in the data space, on the CPU
    >>> images = run.sample(64, steps=1, images=True)         # uint8 [64, C, H, W] for image data
    >>> run.evaluate(steps=[1, 2])["rows"]
    """

    def __init__(self, path: Path, step: int, weights: str, components, registries, overrides: tuple[str, ...]):
        self.path, self.step, self.weights = path, step, weights
        self.components, self.registries, self.overrides = components, registries, overrides

    @property
    def recipe(self):
        return self.components.recipe

    @property
    def flowmap(self):
        """The flow map f(x_t, s, t) with the checkpoint's weights, in eval mode."""
        return self.components.flowmap

    @property
    def dataset(self):
        return self.components.dataset

    def sampler(self, name: str | None = None):
        """The run's sampler, or another registered one with the recipe's schedule settings."""
        from fewstep.eval.evaluate import sampler_named

        return sampler_named(self.components, self.registries, name)

    def sample(self, n: int, steps: int = 1, *, sampler: str | None = None, seed: int = 0, images: bool = False,
               batch_size: int | None = None):
        """``n`` samples after ``steps`` sampler steps from seeded prior noise (the same noise as ``fewstep
        eval`` with this seed; class-conditional runs draw uniform seeded labels): a float tensor in the
        data space on the CPU, or uint8 images [n, C, H, W] when ``images`` (image data only)."""
        from fewstep.eval.evaluate import sample
        from fewstep.protocols import ImageData

        if images and not isinstance(self.dataset, ImageData):
            raise ConfigError(f"images=True: {self.recipe.data.name} is not image data (kind {self.dataset.kind})")
        x, _, _ = sample(self.components, self.flowmap, self.sampler(sampler), steps, n, seed,
                         batch_size or self.recipe.eval.batch_size)
        return self.dataset.to_uint8(x) if images else x

    def evaluate(self, steps: Sequence[int] | None = None, *, n: int | None = None, sampler: str | None = None,
                 seed: int | None = None) -> dict:
        """The recipe's eval metrics at each step count (default eval.steps) on ``n`` samples (default
        eval.n_samples), with the data-vs-data floor, as ``fewstep eval`` reports them (nothing written)."""
        from fewstep.eval.evaluate import evaluate

        ev = self.recipe.eval
        metrics = {m.name: self.registries.metrics.build(m) for m in ev.metrics}
        res = evaluate(self.components, self.flowmap, metrics, ev.step_counts(list(steps) if steps else None),
                       n=n or ev.n_samples, seed=ev.seed if seed is None else seed, sampler=self.sampler(sampler),
                       batch_size=ev.batch_size)
        return {"run": str(self.path), "checkpoint_step": self.step, "weights": self.weights, **res.as_dict()}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, step={self.step}, weights={self.weights!r})"


def load_run(path: str | Path, *, checkpoint: int | None = None, weights: str | None = None,
             device: str | None = None, overrides: Sequence[str] = (), registries=None) -> Run:
    """A trained run (a run directory, or ``runs/<name>`` for the newest run of a group) with the weights
    of a checkpoint (the latest, or the one at step ``checkpoint``): ``weights`` "ema" or "online"
    (default: the recipe's eval.use_ema, EMA for every shipped recipe); ``overrides`` such as
    ``["sampler.schedule=uniform"]`` change its sampler and eval sections."""
    from fewstep.plugins import get_registries
    from fewstep.run.rundir import load_run as _load_run

    regs = registries or get_registries()
    use_ema = _use_ema(weights)
    run_dir, comps, _, step = _load_run(path, regs, device, use_ema, checkpoint=checkpoint, overrides=overrides)
    chosen = comps.recipe.eval.use_ema if use_ema is None else use_ema
    return Run(run_dir, step, "ema" if chosen else "online", comps, regs, tuple(overrides))
