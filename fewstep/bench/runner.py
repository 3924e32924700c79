"""Run a bench: train what has no finished run (resuming what was interrupted), evaluate every run at
every step count with the same sampling seeds, and aggregate mean and spread per entry and data set.

Each run lives in ``<out>/runs/<entry>-<data>-s<seed>/`` and keeps its evaluations in
``bench_eval.json`` keyed by checkpoint and evaluation settings, so re-running a bench after an
interruption (or after adding an entry) trains and evaluates only what is missing.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from fewstep.bench.spec import Bench, Job
from fewstep.errors import CheckpointError
from fewstep.files import write_json
from fewstep.run.checkpoint import checkpoint_dirs, checkpoint_step, latest_checkpoint, load_config
from fewstep.run.records import read_metrics
from fewstep.run.rundir import blocking_changes
from fewstep.run.tracking import log_results


def run_state(job: Job) -> str:
    """``new``, ``partial`` (resumable) or ``done``; a run that cannot continue is a CheckpointError. A job
    that shares an earlier entry's training is ``done``: that entry's job trains (or refuses) the run."""
    if job.shares is not None:
        return "done"
    ckpt = latest_checkpoint(job.run_dir)
    if ckpt is None:
        return "new"
    changed = blocking_changes(job.run_dir, job.recipe)
    step = int(load_config(ckpt)["step"])
    if not job.train:  # a finished run the bench evaluates as it is (entries.<key>.run)
        if changed or step < job.recipe.train.steps:
            why = f"the entry's set changes {', '.join(changed[:5])}" if changed else f"it stops at step {step}"
            raise CheckpointError(f"{job.run_dir}: the bench cannot evaluate this run as it is ({why}); "
                                  "an entry's set may change only eval and sampler settings of a finished run")
        return "done"
    if changed or step > job.recipe.train.steps:
        why = f"differs in {', '.join(changed[:5])}" if changed else f"was trained for {step} steps"
        raise CheckpointError(f"{job.run_dir}: this run {why}, not what the bench asks for; "
                              "delete it or pass --out to start the bench in a new folder")
    return "done" if step == job.recipe.train.steps else "partial"


def seconds_per_step(run_dir: Path) -> float | None:
    """Mean training seconds per step over the run's logged intervals (resumed sessions included)."""
    total, steps, prev = 0.0, 0, 0
    for rec in read_metrics(run_dir):
        n = int(rec["step"]) - prev
        prev = int(rec["step"])
        if n > 0 and rec.get("steps_per_s"):
            total += n / float(rec["steps_per_s"])
            steps += n
    return total / steps if steps else None


def _eval_key(job: Job, step: int, seed: int, steps: list[int]) -> str:
    ev = job.recipe.eval
    spec = {"checkpoint": step, "seed": seed, "steps": sorted(set(steps)),
            "n": ev.n_samples, "metrics": [m.model_dump(mode="json") for m in ev.metrics],
            "sampler": job.recipe.sampler.model_dump(mode="json"), "ema": ev.use_ema}
    return json.dumps(spec, sort_keys=True)


def evaluate_job(job: Job, regs, seeds: list[int], device: str | None = None, log=None, *,
                 checkpoint: int | None = None) -> list[dict]:
    """The run's EMA weights at every step count, once per sampling seed (cached in bench_eval.json).

    ``checkpoint``: an earlier kept checkpoint instead of the latest, measured at ``eval.steps`` only (no
    many-step reference): what the equal-training-time comparison reads."""
    from fewstep.eval.evaluate import evaluate
    from fewstep.run.rundir import load_run

    cache_path = job.eval_cache
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    ev = job.recipe.eval
    step = checkpoint_step(latest_checkpoint(job.run_dir)) if checkpoint is None else checkpoint
    steps = ev.step_counts() if checkpoint is None else list(ev.steps)
    keys = {seed: _eval_key(job, step, seed, steps) for seed in seeds}
    if any(k not in cache for k in keys.values()):
        _, comps, fm, _ = load_run(job.run_dir, regs, device, use_ema=ev.use_ema, checkpoint=checkpoint)
        sampler = regs.samplers.build(job.recipe.sampler)
        metrics = {m.name: regs.metrics.build(m) for m in ev.metrics}
        for seed, key in keys.items():
            if key in cache:
                continue
            if log:
                at = "" if checkpoint is None else f" at step {checkpoint}"
                log(f"  evaluating {job.entry} on {job.data}{at} (train seed {job.seed}, sampling seed {seed})")
            res = evaluate(comps, fm, metrics, steps, n=ev.n_samples, seed=seed, sampler=sampler,
                           batch_size=ev.batch_size)
            cache[key] = res.as_dict()
            write_json(cache_path, cache)
    return [{"eval_seed": seed, **cache[keys[seed]]} for seed in seeds]


def equal_time_budgets(runs: list[dict]) -> dict[tuple[str, int], float]:
    """Per (data set, training seed): the training seconds of the fastest entry's whole run, the budget at
    which every entry is compared again ("which objective for a fixed compute?")."""
    budgets: dict[tuple[str, int], float] = {}
    for run in runs:
        if run["train_seconds_per_step"]:
            key, total = (run["data"], run["seed"]), run["train_seconds_per_step"] * run["train_steps"]
            budgets[key] = min(budgets.get(key, math.inf), total)
    return budgets


def step_within(run_dir: Path, seconds: float, seconds_per_step: float) -> int | None:
    """The latest kept checkpoint trained within ``seconds`` at ``seconds_per_step`` (None: none is)."""
    reached = seconds / seconds_per_step * (1 + 1e-9)
    steps = [checkpoint_step(d) for d in checkpoint_dirs(run_dir)]
    return max((k for k in steps if k <= reached), default=None)


def evaluate_equal_time(runs: list[dict], jobs: list[Job], regs, seeds: list[int], device, log) -> None:
    """Add ``equal_time`` to each run: the checkpoint each entry reached within the fastest entry's
    training time, evaluated at eval.steps. Finer ``train.checkpoint_every`` (and enough
    ``keep_checkpoints``) in the bench's shared section make the comparison finer."""
    budgets = equal_time_budgets(runs)
    for run, job in zip(runs, jobs):
        budget = budgets.get((run["data"], run["seed"]))
        if budget is None or not run["train_seconds_per_step"]:
            continue
        step = step_within(job.run_dir, budget, run["train_seconds_per_step"])
        if step is None:
            log(f"  {job.entry} on {job.data}: no checkpoint kept within {budget:.0f} s of training")
            continue
        if step == checkpoint_step(latest_checkpoint(job.run_dir)):  # the final weights: drop the reference row
            keep = set(job.recipe.eval.steps)
            evals = [{**ev, "rows": [r for r in ev["rows"] if r["steps"] in keep]} for ev in run["evals"]]
        else:
            evals = evaluate_job(job, regs, seeds, device, log, checkpoint=step)
        run["equal_time"] = {"budget_seconds": budget, "step": step, "evals": evals}


def _train_worker(recipe_data: dict, run_dir: str, device: str | None, group: str) -> None:
    """Train one job in a worker process (``--jobs``): the recipe travels as its resolved dict."""
    from fewstep.api import train_recipe
    from fewstep.config import recipe_from_dict
    from fewstep.plugins import get_registries

    regs = get_registries()
    recipe = recipe_from_dict(recipe_data, regs, path=f"{run_dir}/recipe.yaml")
    train_recipe(None, recipe=recipe, run_dir=run_dir, registries=regs, device=device, progress=False, group=group)


def train_parallel(todo: list[Job], jobs: int, device: str | None, log, group: str) -> None:
    """Train ``todo`` in ``jobs`` spawned processes (each with the recipe's train.threads); ``group`` names the
    runs' group for their loggers (the bench's name)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from fewstep.config import recipe_dict

    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as ex:
        futures = {ex.submit(_train_worker, recipe_dict(j.recipe), str(j.run_dir), device, group): j for j in todo}
        log(f"training {len(todo)} runs in {jobs} processes")
        for fut in as_completed(futures):
            job = futures[fut]
            fut.result()
            log(f"{job.entry} on {job.data} (seed {job.seed}): trained ({time.perf_counter() - t0:.0f} s since start)")


def seed_means(evals: list[dict]) -> list[dict]:
    """The evaluation rows of one run averaged over its sampling seeds: {"steps": k, <metric>: mean, ...} per
    step count, what the run's loggers receive (results.json keeps every seed)."""
    rows: dict[int, dict[str, list[float]]] = {}
    for ev in evals:
        for row in ev["rows"]:
            acc = rows.setdefault(row["steps"], {})
            for key, value in row.items():
                if key != "steps" and isinstance(value, (int, float)):
                    acc.setdefault(key, []).append(float(value))
    return [{"steps": k, **{key: sum(v) / len(v) for key, v in acc.items()}} for k, acc in rows.items()]


def run_bench(bench: Bench, regs, *, device: str | None = None, progress: bool = True, jobs: int = 1,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate every job of ``bench``; returns the results dict written to results.json.

    ``jobs > 1`` trains the missing runs in that many processes first (on a CPU, one per core with
    ``train.threads: 1``); evaluation then runs in this process.
    """
    from fewstep.api import train_recipe

    log = log or (lambda msg: None)
    states = {id(j): run_state(j) for j in bench.jobs}  # refuse a mismatched run before training anything
    todo = [j for j in bench.jobs if states[id(j)] != "done"]
    shared = sum(j.shares is not None for j in bench.jobs)
    log(f"{bench.name}: {len(bench.jobs)} runs, {len(bench.jobs) - len(todo) - shared} already trained"
        + (f", {shared} sampling another entry's training" if shared else ""))
    parallel = {id(j) for j in todo} if jobs > 1 and len(todo) > 1 else set()
    if parallel:
        train_parallel(todo, jobs, device, log, bench.name)
        states.update(dict.fromkeys(parallel, "done"))
    runs = []
    for i, job in enumerate(bench.jobs, 1):
        tag = f"[{i}/{len(bench.jobs)}] {job.entry} on {job.data} (seed {job.seed})"
        state = states[id(job)]
        if state != "done":
            log(f"{tag}: {'resuming' if state == 'partial' else 'training'} in {job.run_dir}")
            t0 = time.perf_counter()
            train_recipe(None, recipe=job.recipe, run_dir=job.run_dir, registries=regs, device=device,
                         progress=progress, label=f"{job.entry}/{job.data}/s{job.seed}", group=bench.name)
            log(f"{tag}: trained in {time.perf_counter() - t0:.0f} s")
        elif job.shares is not None:
            log(f"{tag}: trained as {job.shares}, evaluated with its own sampling settings")
        elif not job.train:
            log(f"{tag}: evaluating the finished run {job.run_dir}")
        elif id(job) not in parallel:
            log(f"{tag}: finished run found, not retrained")
        evals = evaluate_job(job, regs, bench.spec.eval.seeds, device, log)
        log_results(job.run_dir, job.recipe, regs, "bench", seed_means(evals),
                    checkpoint_step(latest_checkpoint(job.run_dir)), group=bench.name, warn=log)
        runs.append({"entry": job.entry, "label": job.label, "data": job.data, "seed": job.seed,
                     "run": str(job.run_dir), "train_steps": job.recipe.train.steps,
                     "reference_steps": job.recipe.eval.reference_steps,
                     "train_seconds_per_step": seconds_per_step(job.run_dir), "evals": evals})
    if bench.spec.eval.equal_time:
        evaluate_equal_time(runs, bench.jobs, regs, bench.spec.eval.seeds, device, log)
    return {"bench": bench.name, "file": str(bench.path), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "entries": {k: e.label or k for k, e in bench.spec.entries.items()},
            "data": bench.data_names, "runs": runs, "summary": summarise(runs),
            "equal_time": summarise([{**r, **r["equal_time"]} for r in runs if "equal_time" in r])}


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarise(runs: list[dict]) -> list[dict]:
    """One record per (data, entry, steps): mean and sample std of every metric over all training
    and sampling seeds, plus NFE, sampling throughput, training time and the data floors (and, for
    equal-training-time runs, the budget and the training steps each reached)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["data"], run["entry"]), []).append(run)
    out = []
    for (data, entry), group in groups.items():
        evals = [ev for run in group for ev in run["evals"]]
        metric_names = list(evals[0]["floor"])
        by_steps: dict[int, list[dict]] = {}
        for ev in evals:
            for row in ev["rows"]:
                by_steps.setdefault(row["steps"], []).append(row)
        tps = [r["train_seconds_per_step"] for r in group if r["train_seconds_per_step"]]
        for steps, rows in by_steps.items():
            rec = {"data": data, "entry": entry, "label": group[0]["label"], "steps": steps,
                   "nfe": rows[0]["nfe"], "n": len(rows),
                   "samples_per_s": _mean_std([r["samples_per_s"] for r in rows])[0],
                   "train_seconds_per_step": sum(tps) / len(tps) if tps else None,
                   "reference": steps == group[0]["reference_steps"]}
            if "budget_seconds" in group[0]:  # an equal-training-time record: how far each run got
                rec["budget_seconds"] = _mean_std([r["budget_seconds"] for r in group])[0]
                rec["train_steps_reached"] = sorted({r["step"] for r in group})
            for name in metric_names:
                rec[name], rec[f"{name}_std"] = _mean_std([r[name] for r in rows])
                rec[f"{name}_floor"] = _mean_std([ev["floor"][name] for ev in evals])[0]
            out.append(rec)
    return out
