"""A run's ``metrics.jsonl``: one JSON object per logged step (loss, lr, grad norm, speed, the objective's logs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewstep.files import write_text

METRICS = "metrics.jsonl"

__all__ = ["METRICS", "append_metrics", "read_metrics", "trim_metrics"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in order; [] when there is none. A line that is not a
    JSON object (a crash while appending leaves at most the last one unfinished) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a line of ``run_dir/metrics.jsonl``."""
    with (Path(run_dir) / METRICS).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def trim_metrics(run_dir: str | Path, step: int) -> None:
    """Drop the records logged after ``step`` (a run resuming from that step's checkpoint logs them again)."""
    if (Path(run_dir) / METRICS).exists():
        keep = [r for r in read_metrics(run_dir) if r["step"] <= step]
        write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in keep))
