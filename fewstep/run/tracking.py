"""Experiment tracking: a run's records fanned out to the loggers its recipe selects (``train.loggers``).

``metrics.jsonl`` is the run's own record (resume, ``loss.png`` and the bench read it): the built-in ``jsonl``
logger writes it, is always on, and its errors stop the run as any failed write does. Every other logger
(``tensorboard``, ``wandb``, a plugin's) is guarded: the first exception it raises is reported in one line and
the logger is dropped; training goes on. Only rank 0 tracks (the caller builds no tracker elsewhere).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fewstep.protocols import Logger
from fewstep.run.records import append_metrics, trim_metrics

__all__ = ["JSONL", "JsonlLogger", "RunInfo", "Tracker", "TrackingWarning", "log_results", "result_values"]

JSONL = "jsonl"


class TrackingWarning(UserWarning):
    """A logger failed and was dropped (the run goes on; metrics.jsonl is still written)."""


@dataclass(frozen=True)
class RunInfo:
    """What a logger is told at the start of a training session."""

    run_dir: Path
    group: str  # the run group (runs/<group>/<timestamp>): a bench's entries share the bench's name
    name: str  # <group>/<timestamp>
    recipe: dict[str, Any]  # the resolved recipe, as recipe.yaml holds it
    steps: int  # train.steps
    start_step: int  # 0 for a new run; the checkpoint's step when resuming (or the one evaluated)
    session: str = "train"  # "train", or "eval" / "bench": results of a finished run's checkpoint


class JsonlLogger:
    """``metrics.jsonl``: one JSON line per log interval. On resume the records logged after the checkpoint's
    step are dropped (they are logged again). Sample grids are in ``samples/`` and eval results in
    ``eval.json`` already, so ``image`` and ``results`` add nothing here."""

    def __init__(self, cfg: Any = None):
        self.run_dir: Path | None = None

    def start(self, run: RunInfo) -> None:
        self.run_dir = run.run_dir
        trim_metrics(run.run_dir, run.start_step)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        append_metrics(self.run_dir, values)

    def image(self, step: int, tag: str, path: Path) -> None:
        pass

    def results(self, kind: str, rows: list[dict[str, Any]], step: int | None) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


@dataclass
class Tracker:
    """The selected loggers, called in order; ``names`` keeps their registry names for messages."""

    loggers: list[Logger]
    names: list[str]
    warn: Callable[[str], None] = field(default=lambda msg: warnings.warn(msg, TrackingWarning, stacklevel=3))

    @classmethod
    def build(cls, specs: list[Any] = (), registries=None, *, record: bool = True, **kw) -> "Tracker":
        """Loggers from ``train.loggers`` (validated Configs, built through ``registries``), with ``jsonl``
        first and exactly once (``record``: a training session; no specs: ``jsonl`` alone)."""
        specs = [s for s in specs if s.name != JSONL]
        built = [registries.loggers.get(s.name).build(s) for s in specs]
        first = [JsonlLogger()] if record else []
        return cls([*first, *built], [JSONL] * len(first) + [s.name for s in specs], **kw)

    def _each(self, method: str, *args: Any) -> None:
        kept_loggers, kept_names = [], []
        for logger, name in zip(self.loggers, self.names):
            if name == JSONL:  # the run's own record: its failure is the run's
                getattr(logger, method)(*args)
            else:
                try:
                    getattr(logger, method)(*args)
                except Exception as exc:  # noqa: BLE001 - any failure of a tracker must not stop training
                    self.warn(f"logger {name!r} failed in {method} ({type(exc).__name__}: {exc}); it is off for the "
                              "rest of this run, metrics.jsonl is still written")
                    continue
            kept_loggers.append(logger)
            kept_names.append(name)
        self.loggers, self.names = kept_loggers, kept_names

    def start(self, run: RunInfo) -> None:
        self._each("start", run)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        self._each("scalars", step, values)

    def image(self, step: int, tag: str, path: Path) -> None:
        self._each("image", step, tag, Path(path))

    def results(self, kind: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        self._each("results", kind, rows, step)

    def finish(self, status: str) -> None:
        self._each("finish", status)


NOT_METRICS = ("steps", "nfe", "seconds", "samples_per_s")  # the columns of an eval row that are not metrics


def result_values(kind: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Eval or bench rows ({"steps": k, <metric>: value, ...}) as ``{"<kind>/<metric>/<k> steps": value}``: the
    names under which loggers show them."""
    return {f"{kind}/{key}/{row['steps']} steps": float(value) for row in rows for key, value in row.items()
            if key not in NOT_METRICS and isinstance(value, (int, float))}


def log_results(run_dir: Path, recipe, registries, kind: str, rows: list[dict[str, Any]], step: int,
                group: str | None = None, **kw) -> None:
    """Hand a finished run's eval (or bench) results to the loggers its recipe selects besides ``jsonl``
    (``eval.json`` and the bench's results files hold them already): one short session of those loggers."""
    from fewstep.config import recipe_dict

    specs = [s for s in recipe.train.loggers if s.name != JSONL]
    if not specs:
        return
    run_dir = Path(run_dir)
    group = group or run_dir.parent.name
    tracker = Tracker.build(specs, registries, record=False, **kw)
    tracker.start(RunInfo(run_dir, group, f"{group}/{run_dir.name}", recipe_dict(recipe), recipe.train.steps, step,
                          session=kind))
    tracker.results(kind, rows, step)
    tracker.finish("evaluated")
