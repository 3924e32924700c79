"""The bench runner (fewstep/bench/runner.py): train only what is missing, refuse a run trained otherwise,
mean and spread over seeds, parallel training equal to sequential."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
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


def _with_entry(bench_file, line: str, data: str = "[eight_gaussians]") -> None:
    """The fixture's bench with one more entry line (replacing the last one added) on ``data``."""
    text = "".join(x for x in bench_file.read_text().splitlines(True) if not x.startswith("  again:"))
    text = text.replace("  imm: {recipe: imm.yaml}\n", "  imm: {recipe: imm.yaml}\n" + (line and line + "\n"))
    text = re.sub(r"^data: .*$", f"data: {data}", text, flags=re.M)
    bench_file.write_text(text)


def test_a_run_entry_is_evaluated_as_it_is_never_trained_and_matches_its_recipe_entry(bench_file, tmp_path, regs):
    """A run trained elsewhere on exactly the fm entry's recipe, named as an entry, gives the fm entry's figures;
    it is not retrained, and its evaluations are cached in the bench's folder, not in the run."""
    from fewstep.api import train_recipe

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    _with_entry(bench_file, "")
    fm_job = load_bench(bench_file, out, regs).jobs[0]
    train_recipe(None, recipe=fm_job.recipe, run_dir=elsewhere, registries=regs, progress=False)
    _with_entry(bench_file, "  again: {run: elsewhere, label: FM trained elsewhere}")
    bench = load_bench(bench_file, out, regs)
    (job,) = [j for j in bench.jobs if j.entry == "again"]
    assert job.run_dir == elsewhere and not job.train and run_state(job) == "done"
    ckpt = sorted((elsewhere / "checkpoints").iterdir())[-1]
    stamp = (ckpt / "model.safetensors").stat().st_mtime_ns

    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == stamp and not (elsewhere / "bench_eval.json").exists()
    assert (out / "evals" / "again-eight_gaussians-s0.json").is_file()
    assert not (out / "runs" / "again-eight_gaussians-s0").exists()
    results = json.loads((out / "results.json").read_text())

    def rows(entry):
        return [{k: v for k, v in r.items() if k not in ("entry", "label", "samples_per_s", "train_seconds_per_step")}
                for r in results["summary"] if r["entry"] == entry]

    assert rows("again") == rows("fm") and len(rows("fm")) == 3
    assert "| FM trained elsewhere |" in (out / "results.md").read_text()


def test_an_imported_run_is_a_bench_entry_with_the_figures_of_fewstep_eval(tmp_path, write, regs):
    from fewstep.api import evaluate_run
    from fewstep.networks import NetworkSpec
    from fewstep.networks.ddpmpp import DDPMpp
    from fewstep.testing.fixtures import image_folder, persistence_pickle

    torch.manual_seed(0)
    net = DDPMpp(NetworkSpec((3, 8, 8), None, True), model_channels=16, channel_mult=(1, 2), num_blocks=1,
                 attn_resolutions=(4,), dropout=0.0)
    song = {"model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
    precond = {"img_resolution": 8, "img_channels": 3, "label_dim": 0, "noise_schedule": "fm", "f_type": "simple_edm",
               "temb_type": "identity", "time_scale": 1000, "sigma_data": 0.5, "eps": 0.006, "T": 0.994}
    ckpt = persistence_pickle(tmp_path / "tiny.pkl", net.state_dict(), model_class="SongUNet", model_kwargs=song,
                              precond=precond)
    images = image_folder(tmp_path / "images", size=(8, 8))
    res = runner.invoke(app, ["import-checkpoint", str(ckpt), "--out", str(tmp_path / "released"),
                              "--set", f"data.root={images}", "--set", "eval.batch_size=16",
                              "--set", "eval.metrics=[energy]"])
    assert res.exit_code == 0, res.output
    bench_file = write("released.yaml", "entries:\n  imm: {run: released, label: IMM (released)}\n"
                       "eval: {steps: [1, 2], reference_steps: null, n_samples: 16, metrics: [energy], "
                       "seeds: [1234]}\n")  # the imported recipe's eval.seed, which fewstep eval uses
    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]
    direct = evaluate_run(tmp_path / "released", regs, steps=[1, 2], n=16, write=False)
    assert [(r["steps"], r["energy"]) for r in summary] == [(r["steps"], r["energy"]) for r in direct["rows"]]
    assert summary[0]["data"] == "image_folder" and summary[0]["train_seconds_per_step"] is None


def test_a_run_entry_must_be_finished_on_the_bench_data_and_keep_its_training(bench_file, tmp_path, regs):
    from fewstep.api import train_recipe
    from fewstep.errors import RecipeError

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    _with_entry(bench_file, "")
    fm_job = load_bench(bench_file, out, regs).jobs[0]
    train_recipe(None, recipe=fm_job.recipe, run_dir=elsewhere, registries=regs, progress=False, stop_after=10)
    _with_entry(bench_file, "  again: {run: elsewhere}")
    with pytest.raises(RecipeError, match=r"tiny.yaml:5:\d+ entries.again.run: .*elsewhere is not finished "
                                          r"\(step 10 of 20\); finish it with `fewstep train` first"):
        load_bench(bench_file, out, regs)
    train_recipe(None, recipe=fm_job.recipe, run_dir=elsewhere, registries=regs, progress=False)
    _with_entry(bench_file, "  again: {run: elsewhere}", data="[moons]")
    with pytest.raises(RecipeError, match="entries.again.run: the run was trained on 'eight_gaussians', not on "
                                          r"the bench's data \(moons\)"):
        load_bench(bench_file, out, regs)
    _with_entry(bench_file, "  again: {run: elsewhere, set: {train.lr: 0.1}}")
    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "the bench cannot evaluate this run as it is (the entry's set changes train.lr)" in res.output
    assert not (out / "runs").exists()  # refused before anything trained


def test_entries_are_compared_again_at_the_fastest_entrys_training_time(bench_file, tmp_path, regs, monkeypatch):
    """IMM at 1.6 s a step against FM at 1 s: within FM's 20 s IMM reaches 12.5 steps, so its step-10
    checkpoint is evaluated (at eval.steps, every sampling seed) beside FM's final weights."""
    import fewstep.bench.runner as runner_mod
    from fewstep.bench.report import markdown
    from fewstep.bench.runner import run_bench

    monkeypatch.setattr(runner_mod, "seconds_per_step", lambda run_dir: 1.6 if "/imm-" in str(run_dir) else 1.0)
    bench = load_bench(bench_file, tmp_path / "out", regs)
    results = run_bench(bench, regs, progress=False)
    eq = {(r["data"], r["entry"], r["steps"]): r for r in results["equal_time"]}
    full = {(r["data"], r["entry"], r["steps"]): r for r in results["summary"]}
    for data in ("eight_gaussians", "moons"):
        assert eq[data, "fm", 1]["train_steps_reached"] == [20] and eq[data, "imm", 1]["train_steps_reached"] == [10]
        assert eq[data, "imm", 1]["budget_seconds"] == pytest.approx(20.0)
        assert (data, "imm", 4) not in eq and (data, "fm", 4) not in eq  # no many-step reference at equal time
        assert eq[data, "fm", 2]["energy"] == full[data, "fm", 2]["energy"]  # FM's whole run is the budget
        assert eq[data, "imm", 1]["energy"] != full[data, "imm", 1]["energy"]  # an earlier checkpoint
        assert eq[data, "imm", 1]["n"] == 2  # both sampling seeds
    imm_run = next(r for r in results["runs"] if r["entry"] == "imm" and r["data"] == "eight_gaussians")
    cache = json.loads((Path(imm_run["run"]) / "bench_eval.json").read_text())
    at_10 = [json.loads(k) for k in cache if json.loads(k)["checkpoint"] == 10]
    assert [(k["seed"], k["steps"]) for k in at_10] == [(0, [1, 2]), (1, [1, 2])]
    text = markdown(results)
    assert "## At equal training time" in text and "### moons: 20 s of training" in text

    bench.spec.eval.equal_time = False  # an ablation whose entries cost the same: no second comparison
    results = run_bench(bench, regs, progress=False)
    assert results["equal_time"] == [] and "equal training time" not in markdown(results)
    assert {(r["data"], r["entry"], r["steps"]): r["energy"] for r in results["summary"]} == \
        {k: r["energy"] for k, r in full.items()}  # the fixed-step figures, from the cache, unchanged


def test_step_within_takes_the_last_checkpoint_inside_the_budget(tmp_path):
    from fewstep.bench.runner import equal_time_budgets, step_within

    for k in (100, 200, 300):
        d = tmp_path / "checkpoints" / f"step_{k:07d}"
        d.mkdir(parents=True)
        for name in ("model.safetensors", "ema.safetensors", "config.json", "state.pt"):
            (d / name).write_text("")
    assert step_within(tmp_path, 20.0, 0.1) == 200  # reaches exactly step 200
    assert step_within(tmp_path, 19.9, 0.1) == 100
    assert step_within(tmp_path, 5.0, 0.1) is None
    runs = [{"data": "a", "seed": 0, "train_seconds_per_step": tps, "train_steps": n}
            for tps, n in ((0.1, 300), (0.05, 300), (None, 300))]
    assert equal_time_budgets(runs) == {("a", 0): 15.0}


def test_each_run_reports_to_the_benchs_loggers_grouped_by_bench_name(bench_file, tmp_path, regs):
    """shared: train.loggers reaches every run: its training, and its bench results (the mean over the sampling
    seeds, at its final step), all under the bench's name as the group."""
    from fewstep.bench.runner import run_bench
    from fewstep.builtin import NoConfig
    from fewstep.registry import Registrar

    groups: set[tuple[str, str]] = set()
    reported: dict[str, tuple] = {}  # run folder -> (kind, step, rows)

    class Recording:
        def __init__(self, cfg):
            self.run = None

        def start(self, run):
            self.run = run
            groups.add((run.session, run.group))

        def scalars(self, step, values):
            pass

        def image(self, step, tag, path):
            pass

        def results(self, kind, rows, step):
            reported[self.run.run_dir.name] = (kind, step, rows)

        def finish(self, status):
            pass

    reg = Registrar(regs.loggers, "tests")
    reg.add("recording", Recording, NoConfig, "records its calls")
    reg.commit()
    text = bench_file.read_text().replace("data: [eight_gaussians, {name: moons, noise: 0.1}]", "data: [moons]")
    bench_file.write_text(text.replace("  network.width: 16\n", "  network.width: 16\n  train.loggers: [recording]\n"))
    results = run_bench(load_bench(bench_file, tmp_path / "out", regs), regs, progress=False)
    assert groups == {("train", "tiny"), ("bench", "tiny")}
    assert sorted(reported) == sorted(Path(r["run"]).name for r in results["runs"])
    for run in results["runs"]:
        kind, step, rows = reported[Path(run["run"]).name]
        assert (kind, step) == ("bench", 20)
        for steps in (1, 2, 4):
            row = next(r for r in rows if r["steps"] == steps)
            seeds = [next(x for x in e["rows"] if x["steps"] == steps) for e in run["evals"]]
            assert row["energy"] == pytest.approx(sum(x["energy"] for x in seeds) / len(seeds), rel=1e-12)


def test_an_entry_that_changes_only_sampling_reuses_the_training_of_an_earlier_entry(bench_file, tmp_path, regs):
    """An entry whose recipe differs from an earlier entry's only in sampler, eval or output settings is not
    trained again: it evaluates that entry's run with its own sampler (cache in the bench's evals/). An entry
    that changes training is trained on its own."""
    out = tmp_path / "out"
    _with_entry(bench_file, "  again: {recipe: imm.yaml, set: {sampler: {name: restart}}}\n"
                            "  k4: {recipe: imm.yaml, set: {objective.k: 4}}")
    bench = load_bench(bench_file, out, regs)
    jobs = {j.entry: j for j in bench.jobs}
    assert jobs["again"].shares == "imm" and not jobs["again"].train
    assert jobs["again"].run_dir == jobs["imm"].run_dir and jobs["again"].eval_cache == out / "evals" / \
        "again-eight_gaussians-s0.json"
    assert jobs["k4"].shares is None and jobs["k4"].run_dir != jobs["imm"].run_dir

    res = runner.invoke(app, ["bench", str(bench_file), "--out", str(out), "-q", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["fm-eight_gaussians-s0", "imm-eight_gaussians-s0",
                                                                 "k4-eight_gaussians-s0"]
    results = json.loads((out / "results.json").read_text())
    rows = {(r["entry"], r["steps"]): r["energy"] for r in results["summary"]}
    assert rows[("again", 1)] == rows[("imm", 1)]   # one step is one jump under either sampler
    assert rows[("again", 2)] != rows[("imm", 2)]   # two steps: restart re-noises, pushforward does not
    assert run_state(load_bench(bench_file, out, regs).jobs[-2]) == "done"
