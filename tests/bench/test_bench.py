"""``fewstep bench``: outputs, resume without retraining, aggregation, checks and bench-file errors."""
from __future__ import annotations

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from fewstep.bench import load_bench
from fewstep.bench.report import run_checks
from fewstep.bench.runner import run_state, summarise
from fewstep.bench.spec import parse_check
from fewstep.cli import app
from fewstep.errors import CheckpointError, RecipeError

runner = CliRunner()

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 2, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {obj}
train: {{steps: 20, batch_size: 64, optimizer: adam, lr: 1e-3, log_every: 5, checkpoint_every: 10}}
"""

BENCH = """\
name: tiny
entries:
  fm: {recipe: fm.yaml, label: FM}
  imm: {recipe: imm.yaml}
data: [eight_gaussians, {name: moons, noise: 0.1}]
shared:
  train.steps: 20
  network.width: 16
eval: {steps: [1, 2], reference_steps: 4, n_samples: 128, metrics: [energy, sw2], seeds: [0, 1]}
checks: ["energy: imm@1 <= fm@4", "sw2: fm@1 < 100 * imm@2"]
"""


@pytest.fixture
def bench_file(write):
    write("fm.yaml", RECIPE.format(obj="{name: fm}"))
    write("imm.yaml", RECIPE.format(obj="{name: imm, group_size: 4, k: 6}"))
    return write("tiny.yaml", BENCH)


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


def test_checks_parse_and_evaluate_on_each_data_set():
    c = parse_check("sw2: imm@1 <= 0.25 * fm@1", ["fm", "imm"])
    assert (c.metric, c.lhs, c.op, c.factor, c.rhs) == ("sw2", ("imm", 1), "<=", 0.25, ("fm", 1))
    results = {"data": ["a", "b"], "summary": [
        {"data": "a", "entry": "fm", "steps": 1, "sw2": 1.0}, {"data": "a", "entry": "imm", "steps": 1, "sw2": 0.2},
        {"data": "b", "entry": "fm", "steps": 1, "sw2": 1.0}, {"data": "b", "entry": "imm", "steps": 1, "sw2": 0.3}]}
    assert [r["ok"] for r in run_checks(results, [c])] == [True, False]
    for bad, why in (("sw2 imm@1 <= fm@1", "expected"), ("sw2: xx@1 <= fm@1", "unknown entry 'xx'")):
        with pytest.raises(ValueError, match=why):
            parse_check(bad, ["fm", "imm"])


@pytest.mark.parametrize("edit, expected", [
    (("checks: [", "checks: [\"energy: ct@1 < fm@1\", "), "tiny.yaml:10:10 checks[0]: unknown entry 'ct'"),
    (("imm: {recipe: imm.yaml}", "imm: {recipe: nope.yaml}"), "tiny.yaml:4:9 entries.imm.recipe: no such file"),
    (("train.steps: 20", "train.steps: -3"), "tiny.yaml shared.train.steps) train.steps: input should be greater than"),
    (("eval: {", "evals: {"), "tiny.yaml:9:1 evals: unknown field"),
    (("name: moons, noise: 0.1", "name: mons"),
     "tiny.yaml data) data.name: unknown dataset 'mons'; did you mean 'moons'?"),
])
def test_bench_file_errors_are_one_line_each_exit_2(bench_file, edit, expected):
    bench_file.write_text(bench_file.read_text().replace(*edit))
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 2, res.output
    assert expected in res.output and "Traceback" not in res.output


def test_check_flag_validates_every_expanded_recipe(bench_file, regs):
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 0 and res.output.count("ok  ") == 4
    bench = load_bench(bench_file, None, regs)
    expected = {(e, d) for e in ("fm", "imm") for d in ("eight_gaussians", "moons")}
    assert {(j.entry, j.data) for j in bench.jobs} == expected
    assert all(j.recipe.train.steps == 20 and j.recipe.network.width == 16 for j in bench.jobs)
    assert bench.jobs[1].recipe.data.noise == 0.1


def test_recipe_errors_name_the_bench_field_that_caused_them(bench_file, regs):
    bench_file.write_text(bench_file.read_text().replace("seeds: [0, 1]}", "seeds: []}"))
    with pytest.raises(RecipeError, match="eval.seeds"):
        load_bench(bench_file, None, regs)


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


@pytest.mark.parametrize("old, new, expect", [
    ("seeds: [0, 1]}", "seeds: [0, true]}", "eval.seeds.1: expected a number, not the boolean true"),
    ("steps: [1, 2], reference", "steps: [0, 2], reference",
     "eval.steps.0: input should be greater than or equal to 1"),
    ("steps: [1, 2], reference", "steps: [], reference", "eval.steps: list should have at least 1 item"),
    ("n_samples: 128", "n_samples: .inf", "eval.n_samples: input should be a finite number"),
    ("train.steps: 20", "train.steps: false", "shared.train.steps) train.steps: expected a number"),
])
def test_bad_bench_values_are_one_line_each(bench_file, old, new, expect):
    bench_file.write_text(BENCH.replace(old, new))
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()  # a shared override is reported once per recipe it reaches
    assert lines and all(expect.lower() in line.lower() for line in lines), res.output
