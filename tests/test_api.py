"""fewstep.api: train_recipe (writing, resuming, refusing a run), evaluate_run and sample_run on a tiny run."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from fewstep.api import evaluate_run, sample_run, train_recipe
from fewstep.config import load_recipe, recipe_dict
from fewstep.errors import CheckpointError, ConfigError
from fewstep.plugins import load_registries
from fewstep.run.checkpoint import checkpoint_dirs
from fewstep.run.records import read_metrics
from fewstep.run.rundir import load_run_recipe

TINY = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 1, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
train: {{steps: 4, batch_size: 16, optimizer: adam, lr: 1e-3, log_every: 1, checkpoint_every: 2,
        sample_every: 2, threads: 1}}
eval: {{steps: [1, 2], reference_steps: 3, n_samples: 64, metrics: [energy]}}
output: {{dir: {out}}}
"""


@pytest.fixture(autouse=True)
def keep_threads():
    """train_recipe sets torch's thread count from the recipe: give the next test what this one had."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def recipe(tmp_path, write):
    return write("tiny.yaml", TINY.format(out=tmp_path / "runs"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run shared by the evaluation and sampling tests."""
    root = tmp_path_factory.mktemp("api")
    path = root / "tiny.yaml"
    path.write_text(TINY.format(out=root / "runs"))
    regs = load_registries(env={}, warn=False)
    return train_recipe(path, registries=regs, progress=False), regs


def test_train_recipe_writes_the_run(recipe, regs, tmp_path):
    logs = []
    result = train_recipe(recipe, registries=regs, progress=False, log=logs.append)
    run = result.run_dir
    assert run.parent == tmp_path / "runs" / "tiny"  # <output.dir>/<recipe stem>/<timestamp>
    assert (result.start_step, result.end_step) == (0, 4) and result.seconds > 0
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert "_provenance" in saved
    assert recipe_dict(load_run_recipe(run, regs)) == recipe_dict(load_recipe(recipe, registries=regs))
    assert saved["train"]["steps"] == 4 and saved["sampler"]["name"] == "euler"  # resolved, defaults filled in
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in read_metrics(run))
    assert [d.name for d in checkpoint_dirs(run)] == ["step_0000002", "step_0000004"]
    grids = [run / "samples" / f"step_{s:07d}.png" for s in (2, 4)]
    assert sorted((run / "samples").iterdir()) == grids  # every sample_every steps and at the end
    for png in [*grids, run / "loss.png"]:
        with Image.open(png) as im:
            assert im.format == "PNG"
    assert logs == [f"{run}: a new run of 4 steps", *(f"samples: {g}" for g in grids)]


def test_train_recipe_takes_a_validated_recipe(regs, tmp_path):
    from fewstep.testing import tiny_recipe

    recipe = tiny_recipe(regs, train={"steps": 2, "batch_size": 16, "checkpoint_every": 2, "threads": 1},
                         eval={"steps": [1], "reference_steps": None}, output={"dir": str(tmp_path), "name": "given"})
    result = train_recipe(None, recipe=recipe, registries=regs, progress=False)
    assert result.run_dir.parent == tmp_path / "given" and result.end_step == 2


def test_train_recipe_resumes_the_newest_unfinished_run(recipe, regs):
    first = train_recipe(recipe, registries=regs, progress=False, stop_after=2)
    assert (first.start_step, first.end_step) == (0, 2)
    assert not (first.run_dir / "samples" / "step_0000004.png").exists()
    logs = []
    resumed = train_recipe(recipe, registries=regs, progress=False, log=logs.append)
    assert resumed.run_dir == first.run_dir and (resumed.start_step, resumed.end_step) == (2, 4)
    assert logs[0] == f"{first.run_dir}: resuming at step 2 of 4"  # said at the start
    assert not any("bit for bit" in m for m in logs)  # the same recipe: no caveat
    assert [r["step"] for r in read_metrics(resumed.run_dir)] == [1, 2, 3, 4]
    fresh = train_recipe(recipe, registries=regs, progress=False, fresh=True, stop_after=1)
    assert fresh.run_dir != first.run_dir and fresh.start_step == 0


def test_resuming_with_changed_numerics_says_so_through_log(recipe, regs):
    first = train_recipe(recipe, registries=regs, progress=False, stop_after=2)
    logs = []
    resumed = train_recipe(recipe, ["train.threads=2"], registries=regs, progress=False, stop_after=1,
                           log=logs.append)
    assert resumed.run_dir == first.run_dir and resumed.start_step == 2
    (msg,) = [m for m in logs if m.startswith("resuming")]
    assert msg.startswith(f"resuming {first.run_dir} with train.threads changed")
    assert "not bit for bit" in msg
    assert yaml.safe_load((first.run_dir / "recipe.yaml").read_text())["train"]["threads"] == 2  # rewritten


def test_a_run_dir_trained_with_another_recipe_is_refused(recipe, regs, write, tmp_path):
    first = train_recipe(recipe, registries=regs, progress=False, stop_after=2)
    before = (first.run_dir / "recipe.yaml").read_text()
    wider = write("wide.yaml", recipe.read_text().replace("width: 16", "width: 24"))
    with pytest.raises(CheckpointError, match=r"trained with a different recipe \(differs in network.width\); "
                                              "use --fresh"):
        train_recipe(wider, run_dir=first.run_dir, registries=regs, progress=False)
    assert (first.run_dir / "recipe.yaml").read_text() == before  # nothing rewritten
    assert [d.name for d in checkpoint_dirs(first.run_dir)] == ["step_0000002"]
    ok = train_recipe(recipe, ["train.steps=6"], run_dir=first.run_dir, registries=regs, progress=False,
                      stop_after=1)  # a longer run of the same recipe is fine
    assert (ok.start_step, ok.end_step) == (2, 3)


def test_evaluate_run_rows_for_eval_steps_and_reference_steps(trained):
    result, regs = trained
    out = evaluate_run(result.run_dir, regs)
    assert [r["steps"] for r in out["rows"]] == [1, 2, 3] and [r["nfe"] for r in out["rows"]] == [1, 2, 3]
    assert all(r["energy"] > 0 for r in out["rows"]) and out["floor"]["energy"] >= 0
    assert (out["run"], out["checkpoint_step"], out["weights"]) == (str(result.run_dir), 4, "ema")
    assert out["n_samples"] == 64 and out["reference_steps"] == 3
    assert json.loads((result.run_dir / "eval.json").read_text()) == out


def test_evaluate_run_with_other_steps_and_without_writing(trained, tmp_path):
    result, regs = trained
    (result.run_dir / "eval.json").unlink(missing_ok=True)
    out = evaluate_run(result.run_dir.parent, regs, steps=[4], n=32, sampler="heun", write=False)
    assert [(r["steps"], r["nfe"]) for r in out["rows"]] == [(4, 8), (3, 6)]  # Heun: 2 NFE per step
    assert out["n_samples"] == 32 and out["sampler"] == "heun"
    assert not (result.run_dir / "eval.json").exists()


def test_sample_run_writes_the_png(trained, tmp_path):
    result, regs = trained
    default = sample_run(result.run_dir, [1, 2], n=64, registries=regs)
    assert default == result.run_dir / "samples" / "sample_step_0000004.png"
    again = sample_run(result.run_dir, [1], n=64, registries=regs)  # an earlier sheet is never overwritten...
    assert again == result.run_dir / "samples" / "sample_step_0000004-2.png"
    assert sample_run(result.run_dir, [1], n=64, registries=regs, force=True) == default  # ... unless asked
    out = sample_run(result.run_dir, [1], n=32, out=tmp_path / "pics" / "s.png", sampler="pushforward",
                     registries=regs)
    assert out == tmp_path / "pics" / "s.png"
    for png in (default, out):
        with Image.open(png) as im:
            assert im.format == "PNG"


def test_sample_run_refuses_an_out_that_is_a_folder(trained, tmp_path):
    result, regs = trained
    with pytest.raises(ConfigError, match=f"--out {tmp_path}: is a folder; give a file name such as "):
        sample_run(result.run_dir, [1], out=tmp_path, registries=regs)
    with pytest.raises(ConfigError, match="is a folder"):  # checked before the run is even looked at
        sample_run(tmp_path / "not-a-run", [1], out=tmp_path, registries=regs)


def test_train_init_starts_a_new_run_from_another_runs_ema_weights(recipe, regs, tmp_path):
    """train.init: the new run's weights (raw and EMA) start as the source run's EMA weights; with a learning
    rate far below float32 resolution the first step leaves them as they are, so they can be compared."""
    from safetensors.torch import load_file

    from fewstep.run.checkpoint import latest_checkpoint

    source = train_recipe(recipe, registries=regs, progress=False).run_dir
    logs = []
    started = train_recipe(recipe, ["output.name=started", f"train.init={source.parent}", "train.steps=1",
                                    "train.lr=1e-30", "train.warmup_steps=0"], registries=regs, progress=False,
                           log=logs.append).run_dir
    ema = load_file(str(latest_checkpoint(source) / "ema.safetensors"))
    for file in ("model.safetensors", "ema.safetensors"):
        got = load_file(str(latest_checkpoint(started) / file))
        assert all(torch.equal(got[k], ema[k]) for k in ema), file
    assert any(line.startswith(f"initialised from {latest_checkpoint(source)}") for line in logs)


def test_train_init_from_another_network_or_nothing_is_one_line_and_writes_nothing(recipe, regs, tmp_path):
    source = train_recipe(recipe, registries=regs, progress=False).run_dir
    with pytest.raises(CheckpointError, match="does not match the recipe's network"):
        train_recipe(recipe, ["output.name=wide", f"train.init={source}", "network.width=24"], registries=regs,
                     progress=False)
    with pytest.raises(CheckpointError, match="not a run directory"):
        train_recipe(recipe, ["output.name=none", f"train.init={tmp_path / 'nothing'}"], registries=regs,
                     progress=False)
    assert not (tmp_path / "runs" / "wide").exists() and not (tmp_path / "runs" / "none").exists()


# --- the Python API: fewstep.load_run -> Run --------------------------------------------------------
def test_fewstep_exports_the_python_api_lazily():
    import subprocess
    import sys

    import fewstep
    from fewstep import api

    assert fewstep.load_run is api.load_run and fewstep.train_recipe is api.train_recipe
    assert fewstep.Run is api.Run and callable(fewstep.load_recipe)
    code = "import sys, fewstep; fewstep.load_recipe; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # import fewstep stays light


def test_a_loaded_run_samples_and_evaluates_as_the_commands_do(trained):
    import fewstep

    result, regs = trained
    run = fewstep.load_run(result.run_dir.parent, registries=regs)  # a group: its newest run
    assert (run.path, run.step, run.weights) == (result.run_dir, 4, "ema") and "step=4" in repr(run)
    x = run.sample(100, steps=2, seed=3)
    assert x.shape == (100, 2) and x.dtype == torch.float32 and torch.equal(x, run.sample(100, 2, seed=3))
    assert not torch.equal(x, run.sample(100, 2, seed=4))
    def measured(rows):
        return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]

    mine = run.evaluate(steps=[1, 2])
    theirs = evaluate_run(result.run_dir, regs, steps=[1, 2], write=False)  # what `fewstep eval` reports
    assert measured(mine["rows"]) == measured(theirs["rows"]) and mine["floor"] == theirs["floor"]


def test_load_run_picks_the_checkpoint_the_weights_and_the_sampler_settings(trained):
    import fewstep

    result, regs = trained
    latest = fewstep.load_run(result.run_dir, registries=regs)
    online = fewstep.load_run(result.run_dir, weights="online", registries=regs)
    older = fewstep.load_run(result.run_dir, checkpoint=2, registries=regs)
    assert (online.weights, older.step) == ("online", 2)
    sample = [r.sample(50, 1, seed=0) for r in (latest, online, older)]
    assert not torch.equal(sample[0], sample[1]) and not torch.equal(sample[0], sample[2])
    heun = fewstep.load_run(result.run_dir, overrides=["sampler.name=heun", "eval.n_samples=16"], registries=regs)
    assert heun.sampler().name == "heun" and heun.recipe.eval.n_samples == 16
    with pytest.raises(ConfigError, match="--set train.lr=1: after training only the sampler and eval sections"):
        fewstep.load_run(result.run_dir, overrides=["train.lr=1"], registries=regs)
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 3 \(kept: 2, 4; train.keep_checkpoints"):
        fewstep.load_run(result.run_dir, checkpoint=3, registries=regs)
    with pytest.raises(ConfigError, match="weights: 'raw' is not one of ema, online"):
        fewstep.load_run(result.run_dir, weights="raw", registries=regs)
    with pytest.raises(ConfigError, match="images=True: eight_gaussians is not image data"):
        latest.sample(4, images=True)


def test_save_samples_writes_the_arrays_of_every_step_count(trained, tmp_path):
    import numpy as np

    import fewstep
    from fewstep.api import save_samples

    result, regs = trained
    lines = save_samples(result.run_dir, [1, 2], n=10, seed=5, npz=tmp_path / "s.npz", registries=regs)
    with np.load(tmp_path / "s.npz") as data:
        assert sorted(data.files) == ["steps_1", "steps_2"] and data["steps_2"].shape == (10, 2)
        run = fewstep.load_run(result.run_dir, registries=regs)
        assert np.array_equal(data["steps_2"], run.sample(10, 2, seed=5).numpy())
    assert lines == [f"wrote {tmp_path / 's.npz'} (steps_1: (10, 2), steps_2: (10, 2))"]
    with pytest.raises(ConfigError, match="--save-png: eight_gaussians is not image data; use --save-npz"):
        save_samples(result.run_dir, [1], n=4, png_dir=tmp_path / "p", registries=regs)
