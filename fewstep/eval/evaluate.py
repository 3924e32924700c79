"""Evaluate a trained run: samples at 1, 2, 4, 8 steps against fresh data, with the data-vs-data floor.

Sampling noise and reference data come from fixed seeds, so two runs (two objectives) evaluated with
the same settings see the same initial noise and the same reference set.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fewstep.errors import ConfigError
from fewstep.files import write_json
from fewstep.protocols import ImageData, NotesReference, OwnReference
from fewstep.run.components import Components
from fewstep.run.dist import Dist, from_env
from fewstep.run.rundir import load_run
from fewstep.run.tracking import log_results
from fewstep.samplers import generate


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]  # one per step count: steps, nfe, seconds, <metric>: value
    floor: dict[str, float]  # metric between two fresh data sets of the same size
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "floor": self.floor, **self.meta}


def labels_for(comps: Components, n: int, seed: int) -> torch.Tensor | None:
    """Class labels for n samples of a class-conditional run (uniform, seeded), else None."""
    k = comps.dataset.num_classes
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed + 4)) if k else None


def sample(comps: Components, fm, sampler, n_steps: int, n: int, seed: int, batch_size: int = 4096):
    """n samples with an n_steps sampler from seeded prior noise; returns (samples, nfe, seconds)."""
    gen = torch.Generator().manual_seed(seed)
    cond = labels_for(comps, n, seed)
    t0 = time.perf_counter()
    x, nfe = generate(fm, sampler, n_steps, n, comps.dataset.shape, generator=gen, device=comps.device,
                      batch_size=batch_size, cond=None if cond is None else cond.to(comps.device))
    if x.is_cuda:
        torch.cuda.synchronize()
    return x.cpu(), nfe, time.perf_counter() - t0


def sample_sharded(comps: Components, fm, sampler, n_steps: int, n: int, seed: int, batch_size: int, dist=None):
    """``sample`` split over torchrun's processes: rank r draws ceil(n / world) samples from seed
    seed + 104729 r, and every rank gets all of them (the same distribution as one process, other draws)."""
    if dist is None or dist.world == 1:
        return sample(comps, fm, sampler, n_steps, n, seed, batch_size)
    t0 = time.perf_counter()
    x, nfe, _ = sample(comps, fm, sampler, n_steps, -(-n // dist.world), seed + 104729 * dist.rank, batch_size)
    x = dist.gather_rows(x, comps.device)[:n]
    return x, nfe, time.perf_counter() - t0


def _measure(name: str, metric, x: torch.Tensor, ref: torch.Tensor, dataset, generator) -> dict[str, float]:
    """One metric on one sample set: image metrics (``metric.kind == "images"``) see uint8 images,
    point metrics flat vectors; a metric with its own reference (:class:`OwnReference`) is handed no
    data (its floor is fresh data against that reference). A metric returns a float (its column is the
    metric's registry name) or a dict of labelled values (e.g. ``{"FD-digits": .., "KID-digits": ..}``).
    """
    own = isinstance(metric, OwnReference) and metric.own_reference
    if metric.kind == "images":
        if not (dataset.kind == "images" and isinstance(dataset, ImageData)):
            raise ConfigError(f"eval.metrics: {name} needs image data; data is {dataset.kind}")
        out = metric(dataset.to_uint8(x), None if own else dataset.to_uint8(ref), generator)
    else:
        out = metric(x.flatten(1), ref.flatten(1), generator)
    return {k: float(v) for k, v in out.items()} if isinstance(out, dict) else {name: float(out)}


def evaluate(comps: Components, fm, metrics: dict[str, Any], steps: list[int], *, n: int, seed: int,
             sampler=None, batch_size: int = 4096, dist: Dist | None = None) -> EvalResult:
    """Every metric at every step count, plus the floor of each metric (data vs fresh data).

    Under torchrun (``dist``), the processes share the sampling and rank 0 computes the metrics; the
    other ranks return rows without them."""
    main = dist is None or dist.main
    sampler = sampler or comps.sampler
    data = comps.dataset
    ref = data.sample(n, torch.Generator().manual_seed(seed + 1)).x
    other = data.sample(n, torch.Generator().manual_seed(seed + 2)).x
    mgen = lambda: torch.Generator().manual_seed(seed + 3)  # noqa: E731 - same projections for every row
    floor: dict[str, float] = {}
    for name, m in metrics.items() if main else ():
        floor.update(_measure(name, m, other, ref, data, mgen()))
    rows = []
    for k in steps:
        x, nfe, secs = sample_sharded(comps, fm, sampler, k, n, seed, batch_size, dist)
        row = {"steps": k, "nfe": nfe, "seconds": round(secs, 4), "samples_per_s": round(n / secs, 1)}
        for name, m in metrics.items() if main else ():
            row.update(_measure(name, m, x, ref, data, mgen()))
        rows.append(row)
    meta = {"n_samples": n, "seed": seed, "sampler": sampler.name, "processes": dist.world if dist else 1,
            "data_reference": data.reference_note if isinstance(data, NotesReference) else "fresh samples of the data"}
    return EvalResult(rows, floor, meta)


def sampler_named(comps: Components, regs, name: str | None):
    """The run's sampler, or another registered one with the recipe's schedule settings."""
    if name is None:
        return comps.sampler
    from fewstep.config import tagged

    spec = {**comps.recipe.sampler.model_dump(), "name": name}
    return regs.samplers.build(tagged(regs.samplers.get(name)).model_validate(spec))


def evaluate_run(path: str | Path, regs, *, steps: list[int] | None = None, n: int | None = None,
                 sampler: str | None = None, device: str | None = None, write: bool = True,
                 checkpoint: int | None = None, use_ema: bool | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """What ``fewstep eval`` does: evaluate a run's weights (EMA unless ``use_ema`` is false; the latest
    checkpoint or the one at step ``checkpoint``; its sampler and eval sections changed by ``overrides``)
    and write ``eval.json`` into it.

    Under torchrun the processes share the sampling; rank 0 returns the results, the others None."""
    dist = from_env()
    try:
        out, recipe = _evaluate_run(path, regs, steps, n, sampler, dist.device(device), dist,
                                    load=dict(checkpoint=checkpoint, use_ema=use_ema, overrides=tuple(overrides)))
        if write and dist.main:
            write_json(Path(out["run"]) / "eval.json", out)
            log_results(Path(out["run"]), recipe, regs, "eval", out["rows"], out["checkpoint_step"])
        return out if dist.main else None
    finally:
        dist.shutdown()


def _evaluate_run(path, regs, steps, n, sampler, device, dist, load) -> tuple[dict[str, Any], Any]:
    run, comps, fm, step = load_run(path, regs, device, load["use_ema"], checkpoint=load["checkpoint"],
                                    overrides=load["overrides"])
    ev = comps.recipe.eval
    use_ema = ev.use_ema if load["use_ema"] is None else load["use_ema"]
    smp = sampler_named(comps, regs, sampler)
    metrics = {m.name: regs.metrics.build(m) for m in ev.metrics}
    res = evaluate(comps, fm, metrics, ev.step_counts(steps), n=n or ev.n_samples, seed=ev.seed, sampler=smp,
                   batch_size=ev.batch_size, dist=dist)
    return {"run": str(run), "checkpoint_step": step, "weights": "ema" if use_ema else "online",
            "overrides": list(load["overrides"]),
            "reference_steps": ev.reference_steps, "schedule": comps.recipe.sampler.model_dump().get("schedule"),
            **res.as_dict()}, comps.recipe
