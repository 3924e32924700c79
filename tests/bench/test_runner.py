"""The bench runner (fewstep/bench/runner.py): train only what is missing, refuse a run trained otherwise,
mean and spread over seeds, parallel training equal to sequential."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from fewstep.bench import load_bench
from fewstep.bench.runner import run_state, summarise
from fewstep.cli import app
from fewstep.errors import CheckpointError

runner = CliRunner()

def test_rerun_after_an_interruption_trains_only_what_is_missing(bench_file, tmp_path, regs, monkeypatch):
    from fewstep.api import train_recipe

    out = tmp_path / "out"
    bench = load_bench(bench_file, out, regs)
    done, partial = bench.jobs[0], bench.jobs[1]
    train_recipe(None, recipe=done.recipe, run_dir=done.run_dir, registries=regs, progress=False)
    train_recipe(None, recipe=partial.recipe, run_dir=partial.run_dir, registries=regs, progress=False,
                 stop_after=10)  # interrupted at its first checkpoint
    assert [run_state(j) for j in bench.jobs] == ["done", "partial", "new", "new"]
    done_ckpt = sorted((done.run_dir / "checkpoints").iterdir())[-1]
    stamp = (done_ckpt / "model.safetensors").stat().st_mtime_ns

    import fewstep.api as train_mod

    calls = []
    real = train_mod.train_recipe
    monkeypatch.setattr(train_mod, "train_recipe", lambda *a, **k: calls.append(k["run_dir"]) or real(*a, **k))
    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert done.run_dir not in calls and len(calls) == 3
    assert (done_ckpt / "model.safetensors").stat().st_mtime_ns == stamp
    lines = [json.loads(x) for x in (partial.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20]  # resumed at 10, not restarted
    # a second re-run neither trains nor re-evaluates
    calls.clear()
    evals = (done.run_dir / "bench_eval.json").stat().st_mtime_ns
    assert runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"]).exit_code == 0
    assert calls == [] and (done.run_dir / "bench_eval.json").stat().st_mtime_ns == evals


def test_a_run_trained_with_another_recipe_is_refused_before_any_training(bench_file, tmp_path, regs):
    from fewstep.api import train_recipe

    out = tmp_path / "out"
    job = load_bench(bench_file, out, regs).jobs[0]
    train_recipe(None, recipe=job.recipe, run_dir=job.run_dir, registries=regs, progress=False, stop_after=10)
    text = bench_file.read_text().replace("network.width: 16", "network.width: 24")
    bench_file.write_text(text)
    with pytest.raises(CheckpointError, match="differs in network.width.*--out"):
        run_state(load_bench(bench_file, out, regs).jobs[0])
    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_summary_is_the_mean_and_sample_std_over_seeds():
    def ev(seed, e1):
        return {"eval_seed": seed, "floor": {"energy": 0.1},
                "rows": [{"steps": 1, "nfe": 1, "samples_per_s": 10.0, "energy": e1}]}
    runs = [{"entry": "a", "label": "A", "data": "d", "seed": s, "reference_steps": 64, "train_seconds_per_step": 0.5,
             "evals": [ev(0, v), ev(1, v + 2)]} for s, v in ((0, 1.0), (1, 3.0))]
    (rec,) = summarise(runs)
    values = [1.0, 3.0, 3.0, 5.0]
    assert rec["n"] == 4 and rec["energy"] == pytest.approx(3.0)
    assert rec["energy_std"] == pytest.approx(math.sqrt(sum((v - 3) ** 2 for v in values) / 3))
    assert rec["energy_floor"] == pytest.approx(0.1) and rec["reference"] is False


def test_parallel_training_gives_the_same_results_as_sequential(bench_file, tmp_path):
    text = bench_file.read_text().replace("data: [eight_gaussians, {name: moons, noise: 0.1}]", "data: [moons]")
    bench_file.write_text(text)
    out = {}
    for jobs in ("1", "2"):
        res = runner.invoke(app, ["bench", str(bench_file), "--out", str(tmp_path / jobs), "-q", "--jobs", jobs])
        assert res.exit_code == 0, res.output
        out[jobs] = json.loads((tmp_path / jobs / "results.json").read_text())["summary"]
    def strip(recs):
        return [{k: v for k, v in r.items() if k not in ("samples_per_s", "train_seconds_per_step")} for r in recs]

    assert strip(out["1"]) == strip(out["2"])
