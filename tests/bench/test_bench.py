"""A bench end to end (fewstep/bench/__init__.py: load_bench, run_bench) through `fewstep bench`: the four
outputs and their columns."""
from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from fewstep.cli import app

runner = CliRunner()


def test_bench_writes_the_four_outputs_with_expected_columns(bench_file, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    for name in ("results.json", "results.csv", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == ["eight_gaussians", "moons"]
    assert len(results["runs"]) == 4 and all(len(r["evals"]) == 2 for r in results["runs"])
    assert all(r["train_seconds_per_step"] > 0 for r in results["runs"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert set(rows[0]) >= {"data", "entry", "label", "steps", "nfe", "n", "energy", "energy_std", "energy_floor",
                            "sw2", "sw2_std", "sw2_floor", "samples_per_s", "train_seconds_per_step"}
    assert len(rows) == 2 * 2 * 3  # data x entries x (1, 2, 4 steps)
    assert {r["steps"] for r in rows} == {"1", "2", "4"} and all(r["n"] == "2" for r in rows)
    md = (out / "results.md").read_text()
    assert "## eight_gaussians" in md and "## moons" in md and "| FM |" in md and "| imm |" in md
    assert "4 steps (ref.)" in md and "data vs data (floor)" in md
    assert len(results["checks"]) == 4 and all(c["ok"] in (True, False) for c in results["checks"])
    assert "energy on moons" in res.output
