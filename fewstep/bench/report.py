"""A bench's outputs: results.json, results.csv, results.md, results.png, the checks, a rich table.

Every number is a mean over training and sampling seeds; ``±`` is the sample standard deviation
(absent with one seed of each). Lower is better for every metric fewstep ships.
"""
from __future__ import annotations

import csv
import io
import operator
from pathlib import Path
from typing import Any

from fewstep.bench.spec import Check
from fewstep.files import write_json, write_text

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def metric_names(results: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for rec in results["summary"]:
        names += [k[:-6] for k in rec if k.endswith("_floor") and k[:-6] not in names]
    return names


def lookup(results: dict[str, Any], data: str, entry: str, steps: int) -> dict[str, Any] | None:
    for rec in results["summary"]:
        if (rec["data"], rec["entry"], rec["steps"]) == (data, entry, steps):
            return rec
    return None


def run_checks(results: dict[str, Any], checks: list[Check]) -> list[dict[str, Any]]:
    """Each check on each data set: the two sides, their values and whether it holds."""
    out = []
    for data in results["data"]:
        for c in checks:
            if c.data and data not in c.data:
                continue
            a, b = lookup(results, data, *c.lhs), lookup(results, data, *c.rhs)
            if a is None or b is None or c.metric not in a or c.metric not in b:
                out.append({"data": data, "check": c.text, "ok": None, "why": "not measured"})
                continue
            lhs, rhs = a[c.metric], c.factor * b[c.metric]
            out.append({"data": data, "check": c.text, "lhs": lhs, "rhs": rhs, "ok": bool(_OPS[c.op](lhs, rhs))})
    return out


def _fmt(rec: dict[str, Any] | None, metric: str) -> str:
    if rec is None or metric not in rec:
        return "–"
    std = rec.get(f"{metric}_std") or 0.0
    return f"{rec[metric]:.4g} ± {std:.2g}" if rec["n"] > 1 and std else f"{rec[metric]:.4g}"


def _steps(results: dict[str, Any]) -> list[int]:
    return sorted({rec["steps"] for rec in results["summary"]})


def _step_label(results: dict[str, Any], k: int) -> str:
    ref = any(rec["reference"] and rec["steps"] == k for rec in results["summary"])
    return f"{k} step{'s' if k > 1 else ''}" + (" (ref.)" if ref else "")


def _floor(results: dict[str, Any], data: str, metric: str) -> float | None:
    return next((r[f"{metric}_floor"] for r in results["summary"] if r["data"] == data and f"{metric}_floor" in r),
                None)


def _rows(results: dict[str, Any], data: str, metric: str, steps: list[int]):
    """(label, formatted cell per step count, first measured record) for each entry measured on data."""
    for entry, label in results["entries"].items():
        recs = [lookup(results, data, entry, k) for k in steps]
        if any(recs):
            yield label, [_fmt(r, metric) for r in recs], next(r for r in recs if r)


def _speed(rec: dict[str, Any]) -> tuple[str, str]:
    """(training ms per step, samples/s) of an entry's first measured step count."""
    tps = rec["train_seconds_per_step"]
    return (f"{tps * 1e3:.1f}" if tps else "–"), f"{rec['samples_per_s']:.4g}"


def _check_values(c: dict[str, Any]) -> str:
    return f"{c['lhs']:.4g} vs {c['rhs']:.4g}" if "lhs" in c else str(c.get("why"))


def markdown(results: dict[str, Any]) -> str:
    """Per data set and metric, a table of entries x step counts; then time and throughput; then checks."""
    steps, lines = _steps(results), [f"# Bench {results['bench']} ({results['file']}, {results['created']})", ""]
    train_seeds = sorted({r["seed"] for r in results["runs"]})
    eval_seeds = sorted({ev["eval_seed"] for r in results["runs"] for ev in r["evals"]})
    lines += [f"Mean over training seeds {train_seeds} x sampling seeds {eval_seeds}; ± is the sample std. "
              "Lower is better.", ""]
    metrics = metric_names(results)
    for data in results["data"]:
        lines += [f"## {data}", ""]
        for metric in metrics:
            lines.append(f"| {metric} | " + " | ".join(_step_label(results, k) for k in steps) + " |")
            lines.append("|---|" + "---:|" * len(steps))
            lines += [f"| {label} | " + " | ".join(cells) + " |"
                      for label, cells, _ in _rows(results, data, metric, steps)]
            floor = _floor(results, data, metric)
            if floor is not None:
                lines.append(f"| data vs data (floor) | {floor:.4g} |" + " |" * (len(steps) - 1))
            lines.append("")
        lines += ["| entry | train ms/step | samples/s at 1 step |", "|---|---:|---:|"]
        lines += ["| {} | {} | {} |".format(label, *_speed(first)) for label, _, first in
                  _rows(results, data, metrics[0], steps)]
        lines.append("")
    lines += _equal_time_markdown(results, metrics)
    if results.get("checks"):
        lines += ["## Checks", ""]
        for c in results["checks"]:
            mark = {True: "x", False: " ", None: "?"}[c["ok"]]
            lines.append(f"- [{mark}] {c['data']}: {c['check']} ({_check_values(c)})")
        lines.append("")
    return "\n".join(lines)


def equal_time_view(results: dict[str, Any]) -> dict[str, Any] | None:
    """The equal-training-time records shaped like ``results`` (so the table helpers read them), or None."""
    if not results.get("equal_time"):
        return None
    return {**results, "summary": results["equal_time"]}


def _reached(rec: dict[str, Any]) -> str:
    return "/".join(str(k) for k in rec["train_steps_reached"])


def _budget(view: dict[str, Any], data: str) -> float | None:
    """The equal-time budget of ``data`` (the fastest entry's training seconds), or None."""
    return next((r["budget_seconds"] for r in view["summary"] if r["data"] == data), None)


def _equal_time_markdown(results: dict[str, Any], metrics: list[str]) -> list[str]:
    """Per data set: every entry at the checkpoint it reached within the fastest entry's training time."""
    view = equal_time_view(results)
    if view is None:
        return []
    lines = ["## At equal training time", "",
             "Each entry at its last checkpoint within the training time of the fastest entry's whole run "
             "(its seconds per step x steps), so the tables below compare objectives at fixed compute, "
             "those above at fixed steps.", ""]
    steps = _steps(view)
    for data in results["data"]:
        budget = _budget(view, data)
        if budget is None:
            continue
        lines += [f"### {data}: {budget:.0f} s of training", ""]
        for metric in metrics:
            lines.append(f"| {metric} | trained steps | " + " | ".join(_step_label(view, k) for k in steps) + " |")
            lines.append("|---|---:|" + "---:|" * len(steps))
            lines += [f"| {label} | {_reached(first)} | " + " | ".join(cells) + " |"
                      for label, cells, first in _rows(view, data, metric, steps)]
            lines.append("")
    return lines


def csv_text(results: dict[str, Any]) -> str:
    names = metric_names(results)
    cols = ["data", "entry", "label", "steps", "nfe", "n", *[f"{m}{s}" for m in names for s in ("", "_std", "_floor")],
            "samples_per_s", "train_seconds_per_step"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for rec in results["summary"]:
        w.writerow(rec)
    return buf.getvalue()


def plot(results: dict[str, Any], path: Path) -> Path:
    """results.png: a row per data set, a panel per metric, each entry's mean (± std) against NFE."""
    from fewstep.eval.plots import metric_vs_nfe

    rows = {}
    for data in results["data"]:
        rows[data] = {m: {label: [(r["nfe"], r[m], r.get(f"{m}_std", 0.0)) for r in results["summary"]
                                  if r["data"] == data and r["entry"] == entry and m in r]
                          for entry, label in results["entries"].items()}
                      for m in metric_names(results)}
    floors = {(r["data"], m): r[f"{m}_floor"] for r in results["summary"] for m in metric_names(results)
              if f"{m}_floor" in r}
    return metric_vs_nfe(rows, path, floors=floors, title=f"bench {results['bench']}: metric vs NFE (lower is better)")


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the four outputs atomically into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "results.json", results)]
    for name, text in (("results.csv", csv_text(results)), ("results.md", markdown(results))):
        paths.append(write_text(out / name, text))
    paths.append(plot(results, out / "results.png"))
    return paths


def print_tables(results: dict[str, Any], console) -> None:
    """A rich table per data set and metric, then the checks."""
    from rich.table import Table

    steps = _steps(results)
    for data in results["data"]:
        for metric in metric_names(results):
            table = Table(title=f"{results['bench']}: {metric} on {data} (lower is better)")
            for col in ["entry", *[_step_label(results, k) for k in steps], "train ms/step", "samples/s @1"]:
                table.add_column(col, justify="left" if col == "entry" else "right")
            for label, cells, first in _rows(results, data, metric, steps):
                table.add_row(label, *cells, *_speed(first))
            floor = _floor(results, data, metric)
            if floor is not None:
                table.add_row("data vs data", f"{floor:.4g}", *[""] * (len(steps) + 1))
            console.print(table)
    view = equal_time_view(results)
    metric = metric_names(results)[0]  # the first metric at equal time; results.md has them all
    for data in results["data"] if view else []:
        budget = _budget(view, data)
        if budget is None:
            continue
        steps = _steps(view)
        table = Table(title=f"{results['bench']}: {metric} on {data} at equal training time ({budget:.0f} s)")
        for col in ["entry", "trained steps", *[_step_label(view, k) for k in steps]]:
            table.add_column(col, justify="left" if col == "entry" else "right")
        for label, cells, first in _rows(view, data, metric, steps):
            table.add_row(label, _reached(first), *cells)
        console.print(table)
    for c in results.get("checks", []):
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[c["ok"]]
        console.print(f"{mark} {c['data']}: {c['check']}  ({_check_values(c)})")
