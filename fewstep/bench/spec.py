"""Bench files: objectives side by side on the same data, network, budget, seeds and metrics.

A bench file names its entries (each a recipe plus overrides) and what they share::

    name: bench_toy
    entries:
      fm:  {recipe: fm_toy.yaml, label: FM (Euler)}      # recipe paths are relative to this file
      imm: {recipe: imm_toy.yaml, set: {objective.k: 10}}
      paper: {run: runs/imported/imm_cifar10}            # a finished (or imported) run: evaluated only
      imm_restart: {recipe: imm_toy.yaml, set: {objective.k: 10, sampler: {name: restart}}}  # imm's runs, resampled
    data: [eight_gaussians, checkerboard]                 # every entry on every data set
    shared: {train.steps: 3000, network: {name: mlp}}     # the same for every entry
    seeds: [0]                                            # training seeds (train.seed)
    eval: {steps: [1, 2, 4, 8], reference_steps: 64, metrics: [energy, sw2], n_samples: 4096, seeds: [0, 1, 2]}
    checks: ["energy: imm@2 <= fm@8", "sw2: imm@1 <= 0.25 * fm@1", "energy[checkerboard]: imm@8 <= imm@1"]

:func:`load_bench` validates every (entry, data, seed) recipe before anything trains, so a typo in
the last entry costs nothing; each problem is one line naming the bench file and the field.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence, Union

from pydantic import Field, ValidationError, model_validator

from fewstep.config.recipe import MAX_SEED, resolve_sampler, validate
from fewstep.config.source import Source, load_yaml, parse_scalar, set_value
from fewstep.errors import ConfigError, RecipeError
from fewstep.validation import StrictModel, error_message

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Strict(StrictModel):
    """Bench file sections: unknown fields, booleans for numbers and non-finite floats are errors."""


class EntrySpec(_Strict):
    recipe: Optional[str] = Field(None, description="Recipe file to train, relative to the bench file.")
    run: Optional[str] = Field(
        None, description="A finished run to evaluate as it is, relative to the bench file: one trained "
                          "elsewhere or imported (`fewstep import-checkpoint`). Not trained, so the bench's "
                          "data, shared and seeds do not apply to it; its set may change eval and sampler only.")
    label: Optional[str] = Field(None, description="Name in tables and plots; default: the entry's key.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides for this entry only.")

    @model_validator(mode="after")
    def _one_source(self) -> EntrySpec:
        if (self.recipe is None) == (self.run is None):
            raise ValueError("give either recipe (a recipe to train) or run (a finished run to evaluate)")
        return self


class BenchEval(_Strict):
    steps: list[Annotated[int, Field(ge=1)]] = Field([1, 2, 4, 8], min_length=1, description="Step counts to evaluate.")
    reference_steps: Optional[int] = Field(64, ge=1, description="Also this many steps, as a many-step reference.")
    metrics: Optional[list[Union[str, dict[str, Any]]]] = Field(None, description="Metrics; null = each recipe's.")
    n_samples: Optional[int] = Field(None, ge=2, description="Samples per step count; null = each recipe's.")
    seeds: list[Seed] = Field([0], min_length=1, description="Sampling seeds per trained model (mean and spread).")
    equal_time: bool = Field(
        True, description="Also compare the entries at the fastest entry's training time (a kept checkpoint "
                          "each); false for ablations whose entries cost the same.")


class BenchSpec(_Strict):
    name: Optional[str] = Field(None, description="Bench name; default: the file's stem.")
    entries: dict[str, EntrySpec] = Field(min_length=1, description="Key -> recipe and overrides.")
    data: Optional[list[Union[str, dict[str, Any]]]] = Field(
        None, description="Data sets, each entry trained on each; null = each recipe's own data.")
    shared: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides for every entry.")
    seeds: list[Seed] = Field([0], min_length=1, description="Training seeds (train.seed); a run per seed.")
    eval: BenchEval = Field(default_factory=BenchEval)
    checks: list[str] = Field(default_factory=list, description='Claims such as "energy: imm@2 <= fm@8", checked '
                              'on every data set, or "energy[checkerboard]: ..." on the data sets named.')


@dataclass
class Job:
    """One run of a bench: an entry on a data set with a training seed. A job of a ``run:`` entry is
    evaluated only (``train`` false), and its evaluations are cached under the bench's folder, not in
    the run it names. So is a job whose recipe trains what an earlier entry's job trains (it differs in
    sampler, eval or output settings only): ``shares`` names that entry, whose run it evaluates."""

    entry: str
    label: str
    data: str
    seed: int
    recipe: Any  # validated Recipe
    run_dir: Path
    train: bool = True
    eval_cache: Optional[Path] = None
    shares: Optional[str] = None

    def __post_init__(self) -> None:
        if self.eval_cache is None:
            self.eval_cache = self.run_dir / "bench_eval.json"


@dataclass
class Check:
    """``metric[data, ...]: lhs@k OP [c *] rhs@j`` on mean values, evaluated per data set (those named, or all)."""

    text: str
    metric: str
    lhs: tuple[str, int]
    op: str
    factor: float
    rhs: tuple[str, int]
    data: tuple[str, ...] = ()  # the data sets it applies to; () = every data set of the bench


@dataclass
class Bench:
    path: Path
    name: str
    spec: BenchSpec
    jobs: list[Job]
    checks: list[Check]
    out: Path  # results go here, runs under out/runs/

    @property
    def data_names(self) -> list[str]:
        return list(dict.fromkeys(j.data for j in self.jobs))

    @property
    def entries(self) -> list[str]:
        return list(self.spec.entries)


_CHECK = re.compile(r"^\s*([\w\-]+)\s*(?:\[([\w\-,\s]+)\])?\s*:\s*(\w+)@(\d+)\s*(<=|<|>=|>)\s*"
                    r"(?:([0-9.eE+-]+)\s*\*\s*)?(\w+)@(\d+)\s*$")


def parse_check(text: str, entries: list[str], data: Sequence[str] | None = None) -> Check:
    """``metric[data, ...]: lhs@k OP [factor *] rhs@j``; the bracket (optional) limits the check to those data
    sets, which must be among ``data`` (the bench's) when that is given."""
    m = _CHECK.match(text)
    if not m:
        raise ValueError('expected "metric: entry@steps <= [factor *] entry@steps", e.g. "energy: imm@2 <= fm@8" '
                         '(or "energy[checkerboard]: ..." for one data set)')
    metric, only, a, k, op, factor, b, j = m.groups()
    for e in (a, b):
        if e not in entries:
            raise ValueError(f"unknown entry {e!r} (entries: {', '.join(entries)})")
    names = tuple(n.strip() for n in only.split(",")) if only else ()
    for n in names:
        if data is not None and n not in data:
            raise ValueError(f"unknown data set {n!r} (data: {', '.join(data)})")
    return Check(text.strip(), metric, (a, int(k)), op, float(factor) if factor else 1.0, (b, int(j)), names)


def _job_name(entry: str, data: str, seed: int) -> str:
    """``<entry>-<data>-s<seed>``: a job's run folder under runs/, or its evaluation cache under evals/."""
    return f"{entry}-{data}-s{seed}"


def _data_label(spec: Union[str, dict[str, Any]]) -> str:
    return spec if isinstance(spec, str) else str(spec.get("name", "data"))


def load_bench(path: str | Path, out: str | Path | None = None, regs=None, *, overrides: Sequence[str] = (),
               only: Sequence[str] = ()) -> Bench:
    """Read and validate a bench file and every recipe it expands to; raises RecipeError listing
    each problem as ``file:line:col field: message``. ``overrides`` (``a.b=value``, as ``--set``) join
    the file's ``shared`` section (``train.steps=200`` smoke-tests a bench); ``only`` keeps those entries."""
    from fewstep.plugins import get_registries
    from fewstep.run.rundir import same_training

    regs = regs or get_registries()
    source = load_yaml(path)
    if isinstance(source.data, dict) and "objective" in source.data and "entries" not in source.data:
        raise RecipeError([f"{path}: a recipe (it has an objective), not a bench file; train it with "
                           f"`fewstep train {path}`, or name it in a bench file's entries"])
    try:
        spec = BenchSpec.model_validate(source.data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where, loc = source.locate(err["loc"])
            lines.append(f"{where} {'.'.join(map(str, loc))}: {error_message(err)}")
        raise RecipeError(lines) from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError([f"--set {item}: expected dotted.path=value, e.g. train.steps=200"])
        spec.shared[key.strip()] = parse_scalar(raw, f"--set {item}")
    if only:
        unknown = [k for k in only if k not in spec.entries]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(spec.entries), n=1, cutoff=0.5)
            raise RecipeError([f"--only {unknown[0]}: no such entry in {path}"
                               + (f"; did you mean {hint[0]!r}?" if hint else "")
                               + f" (entries: {', '.join(spec.entries)})"])
    bench_path = Path(path)
    name = spec.name or bench_path.stem
    out_dir = Path(out) if out else Path("runs") / "bench" / name
    problems: list[str] = []
    checks = []
    for i, text in enumerate(spec.checks):
        try:
            checks.append(parse_check(text, list(spec.entries),
                                      [_data_label(d) for d in spec.data] if spec.data else None))
        except ValueError as exc:
            where, _ = source.locate(("checks", i))
            problems.append(f"{where} checks[{i}]: {exc}")
    jobs = []
    for key, entry in spec.entries.items():
        if only and key not in only:
            continue
        if entry.run is not None:
            try:
                jobs.append(_run_job(bench_path, source, spec, key, entry, out_dir, regs))
            except RecipeError as exc:
                problems += [line for line in exc.lines() if line not in problems]
            continue
        recipe_path = bench_path.parent / entry.recipe
        if not recipe_path.is_file():
            where, _ = source.locate(("entries", key, "recipe"))
            problems.append(f"{where} entries.{key}.recipe: no such file {recipe_path}")
            continue
        for data in spec.data or [None]:
            for seed in spec.seeds:
                try:
                    recipe = _entry_recipe(load_yaml(recipe_path), bench_path, spec, key, entry, data, seed, regs)
                except RecipeError as exc:
                    problems += [line for line in exc.lines() if line not in problems]
                    continue
                dname = _data_label(data) if data is not None else recipe.data.name
                owner = next((j for j in jobs if j.train and (j.data, j.seed) == (dname, seed)
                              and same_training(j.recipe, recipe)), None)
                if owner is not None:  # the same weights as an earlier entry's: evaluate its run
                    jobs.append(Job(key, entry.label or key, dname, seed, recipe, owner.run_dir, train=False,
                                    eval_cache=out_dir / "evals" / f"{_job_name(key, dname, seed)}.json",
                                    shares=owner.entry))
                    continue
                run = out_dir / "runs" / _job_name(key, dname, seed)
                jobs.append(Job(key, entry.label or key, dname, seed, recipe, run))
    if problems:
        raise RecipeError(problems)
    labels = [(j.entry, j.data, j.seed) for j in jobs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: two runs share an entry, data name and seed; give data sets distinct names")
    return Bench(bench_path, name, spec, jobs, checks, out_dir)


def _run_job(bench_path: Path, source, spec: BenchSpec, key: str, entry: EntrySpec, out_dir: Path, regs) -> Job:
    """The evaluate-only job of a ``run:`` entry: the run's own recipe with the bench's eval settings and
    the entry's overrides. The run must be finished and trained on one of the bench's data sets."""
    from fewstep.run.checkpoint import latest_checkpoint, load_config

    where, _ = source.locate(("entries", key, "run"))
    field = f"{where} entries.{key}.run"
    run_dir = bench_path.parent / entry.run
    ckpt = latest_checkpoint(run_dir) if (run_dir / "recipe.yaml").is_file() else None
    if ckpt is None:
        raise RecipeError([f"{field}: {run_dir} is not a run with a checkpoint (a folder that `fewstep train` "
                           "or `fewstep import-checkpoint` wrote)"])
    cfg = load_config(ckpt)
    if cfg["step"] < cfg["recipe"]["train"]["steps"]:
        raise RecipeError([f"{field}: {run_dir} is not finished (step {cfg['step']} of "
                           f"{cfg['recipe']['train']['steps']}); finish it with `fewstep train` first"])
    recipe = _entry_recipe(load_yaml(run_dir / "recipe.yaml"), bench_path, spec, key, entry, None, None, regs)
    data = recipe.data.name
    names = [_data_label(d) for d in spec.data or []]
    if names and data not in names:
        raise RecipeError([f"{field}: the run was trained on {data!r}, not on the bench's data ({', '.join(names)})"])
    seed = recipe.train.seed
    return Job(key, entry.label or key, data, seed, recipe, run_dir, train=False,
               eval_cache=out_dir / "evals" / f"{_job_name(key, data, seed)}.json")


def _entry_recipe(source: Source, bench_path: Path, spec: BenchSpec, key: str, entry: EntrySpec,
                  data, seed: int | None, regs):
    """One entry's recipe (``source``, as read) with the bench's data, shared settings, eval settings, seed
    and its own overrides (a finished run's recipe, ``seed`` None, gets the eval settings and overrides only)."""
    b = str(bench_path)
    if data is not None:
        set_value(source, "data", dict(data) if isinstance(data, dict) else {"name": data}, f"{b} data")
    for k, v in (spec.shared if seed is not None else {}).items():
        set_value(source, k, v, f"{b} shared.{k}")
    ev = spec.eval
    set_value(source, "eval.steps", list(ev.steps), f"{b} eval.steps")
    set_value(source, "eval.reference_steps", ev.reference_steps, f"{b} eval.reference_steps")
    if ev.metrics is not None:
        set_value(source, "eval.metrics", list(ev.metrics), f"{b} eval.metrics")
    if ev.n_samples is not None:
        set_value(source, "eval.n_samples", ev.n_samples, f"{b} eval.n_samples")
    if seed is not None:
        set_value(source, "train.seed", seed, f"{b} seeds")
    for k, v in entry.set.items():
        set_value(source, k, v, f"{b} entries.{key}.set.{k}")
    return resolve_sampler(validate(source, regs), regs)
