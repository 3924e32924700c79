"""fewstep.run.rundir: recipe changes on resume, finding, resolving and loading run directories."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fewstep.config import recipe_dict
from fewstep.errors import CheckpointError
from fewstep.run import rundir
from fewstep.run.checkpoint import save_checkpoint
from fewstep.run.components import build_components
from fewstep.run.rundir import (
    NUMERIC_CHANGES,
    RESUMABLE_CHANGES,
    blocking_changes,
    find_resumable,
    group_dir,
    is_finished,
    load_run,
    load_run_recipe,
    new_run_dir,
    numeric_changes,
    recipe_diff,
    resolve_run,
    run_started,
    unfinished_other,
    write_recipe,
)
from fewstep.testing import tiny_recipe

TRAIN = {"steps": 10, "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "threads": 1}


def _recipe(regs, train=None, **sections):
    return tiny_recipe(regs, train={**TRAIN, **(train or {})}, **sections)


def _checkpoint(run, recipe, regs, step=5, ema_shift=0.0):
    """A checkpoint of ``recipe`` at ``step`` (raw weights of the built net, EMA = raw + ema_shift)."""
    comps = build_components(recipe, regs, "cpu", objective=False)
    ema = build_components(recipe, regs, "cpu", objective=False).net
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(ema_shift)
    save_checkpoint(run, step, comps.net, ema, {}, recipe_dict(recipe))
    return comps.net, ema


# --- recipe_diff ---------------------------------------------------------------------------------
def test_recipe_diff_lists_the_paths_that_differ():
    a = {"train": {"lr": 1e-3, "steps": 10}, "network": {"name": "mlp", "width": 16}, "eval": {"steps": [1, 2]}}
    b = {"train": {"lr": 1e-3, "steps": 20}, "network": {"name": "mlp", "width": 32, "depth": 2},
         "eval": {"steps": [1, 2, 4]}, "extra": 1}
    assert recipe_diff(a, b) == [("eval", "steps"), ("extra",), ("network", "depth"), ("network", "width"),
                                 ("train", "steps")]
    assert recipe_diff(a, a) == []
    assert recipe_diff({**a, "_provenance": {"git": "x"}}, {**a, "_provenance": {"git": "y"}}) == []
    assert recipe_diff({"objective": {"kernel": "laplace"}}, {"objective": {"kernel": {"name": "laplace"}}}) == \
        [("objective", "kernel")]


# --- what may change on resume -------------------------------------------------------------------
def test_numeric_changes_are_resumable_changes():
    assert NUMERIC_CHANGES < RESUMABLE_CHANGES


BOOKKEEPING = [{"train": {"steps": 40}}, {"train": {"log_every": 3}}, {"train": {"checkpoint_every": 7}},
               {"train": {"keep_checkpoints": 5}}, {"train": {"sample_every": 2}},
               {"output": {"dir": "elsewhere"}}, {"eval": {"steps": [1, 3], "n_samples": 100}},
               {"sampler": {"name": "heun"}}]
NUMERIC = [({"train": {"threads": 2}}, "train.threads"), ({"train": {"device": "cpu"}}, "train.device"),
           ({"train": {"precision": "bf16"}}, "train.precision"), ({"train": {"compile": True}}, "train.compile")]
BLOCKING = [({"network": {"name": "mlp", "width": 32, "depth": 1, "emb_dim": 8}}, ["network.width"]),
            ({"train": {"lr": 3e-4}}, ["train.lr"]), ({"train": {"seed": 1}}, ["train.seed"]),
            ({"train": {"batch_size": 32}}, ["train.batch_size"]), ({"train": {"ema_decay": 0.9}}, ["train.ema_decay"]),
            ({"data": {"name": "moons"}}, ["data.name", "data.noise", "data.radius", "data.std"]),
            ({"flowmap": {"parameterisation": "identity"}}, ["flowmap.parameterisation"]),
            ({"objective": {"name": "fm", "sigma": 0.1}}, ["objective.sigma"])]


def _changed(regs, change):
    train = change.get("train", {})
    return _recipe(regs, train=train, **{k: v for k, v in change.items() if k != "train"})


@pytest.mark.parametrize("change", BOOKKEEPING, ids=lambda c: str(c))
def test_bookkeeping_changes_neither_block_nor_change_numerics(regs, tmp_path, change):
    _checkpoint(tmp_path, _recipe(regs), regs)
    new = _changed(regs, change)
    assert blocking_changes(tmp_path, new) == [] and numeric_changes(tmp_path, new) == []


@pytest.mark.parametrize(("change", "field"), NUMERIC, ids=lambda c: str(c))
def test_numeric_changes_are_reported_but_do_not_block(regs, tmp_path, change, field):
    _checkpoint(tmp_path, _recipe(regs), regs)
    new = _changed(regs, change)
    assert numeric_changes(tmp_path, new) == [field]
    assert blocking_changes(tmp_path, new) == []


@pytest.mark.parametrize(("change", "fields"), BLOCKING, ids=lambda c: str(c))
def test_other_changes_block_resuming(regs, tmp_path, change, fields):
    _checkpoint(tmp_path, _recipe(regs), regs)
    new = _changed(regs, change)
    assert blocking_changes(tmp_path, new) == fields
    assert numeric_changes(tmp_path, new) == []


def test_a_run_without_a_checkpoint_has_no_changes(regs, tmp_path):
    new = _recipe(regs, train={"lr": 0.5, "threads": 2})
    assert blocking_changes(tmp_path, new) == [] and numeric_changes(tmp_path, new) == []


# --- run directories -----------------------------------------------------------------------------
def test_group_dir(regs, tmp_path):
    recipe = _recipe(regs, output={"dir": str(tmp_path)})
    assert group_dir(recipe, "recipes/imm_toy.yaml") == tmp_path / "imm_toy"
    assert group_dir(recipe, None) == tmp_path / "run"
    named = _recipe(regs, output={"dir": str(tmp_path), "name": "mine"})
    assert group_dir(named, "recipes/imm_toy.yaml") == tmp_path / "mine"


def test_new_run_dir_is_a_fresh_timestamp(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20250101-120000")
    first = new_run_dir(tmp_path)
    assert first == tmp_path / "20250101-120000" and not first.exists()
    first.mkdir()
    second = new_run_dir(tmp_path)
    assert second == tmp_path / "20250101-120000-1"
    second.mkdir()
    assert new_run_dir(tmp_path) == tmp_path / "20250101-120000-2"


def test_is_finished_compares_the_checkpoint_step_with_its_recipe(regs, tmp_path):
    recipe = _recipe(regs)  # 10 steps
    _checkpoint(tmp_path / "a", recipe, regs, step=5)
    _checkpoint(tmp_path / "b", recipe, regs, step=10)
    assert not is_finished(tmp_path / "a") and is_finished(tmp_path / "b")
    assert not is_finished(tmp_path / "empty")


def test_find_resumable_takes_the_newest_unfinished_run(regs, tmp_path):
    recipe = _recipe(regs)
    group = tmp_path / "g"
    assert find_resumable(group, recipe) is None  # no group yet
    _checkpoint(group / "20250101-000000", recipe, regs, step=5)
    _checkpoint(group / "20250102-000000", recipe, regs, step=5)
    (group / "20250103-000000").mkdir()  # newer, but nothing trained: not a candidate
    (group / "notes.txt").write_text("a file")
    assert find_resumable(group, recipe) == group / "20250102-000000"
    # a recipe change that only affects bookkeeping or numerics still resumes it
    assert find_resumable(group, _recipe(regs, train={"steps": 20, "threads": 2})) == group / "20250102-000000"
    # a blocking change: neither run can continue
    assert find_resumable(group, _recipe(regs, train={"lr": 0.1})) is None


def test_find_resumable_goes_back_past_finished_runs_and_runs_trained_otherwise(regs, tmp_path):
    recipe, other = _recipe(regs), _recipe(regs, train={"lr": 0.1})
    group = tmp_path / "g"
    _checkpoint(group / "20250101-000000", recipe, regs, step=5)  # interrupted
    _checkpoint(group / "20250102-000000", recipe, regs, step=10)  # finished
    _checkpoint(group / "20250103-000000", other, regs, step=5)  # another --set, interrupted
    assert find_resumable(group, recipe) == group / "20250101-000000"
    assert find_resumable(group, other) == group / "20250103-000000"


def test_the_newest_run_left_unfinished_with_other_settings_is_reported(regs, tmp_path):
    recipe, other = _recipe(regs), _recipe(regs, train={"lr": 0.1})
    group = tmp_path / "g"
    assert unfinished_other(group, recipe) is None
    _checkpoint(group / "20250101-000000", other, regs, step=5)
    assert unfinished_other(group, recipe) == (group / "20250101-000000", ["train.lr"], 5, 10)
    assert unfinished_other(group, other) is None  # it can be resumed
    _checkpoint(group / "20250102-000000", recipe, regs, step=10)  # a newer finished run: nothing to ask
    assert unfinished_other(group, recipe) is None


def test_newest_means_started_last_not_last_in_name_order(regs, tmp_path):
    """A run named by --run-dir sorts after every timestamp, but it started first."""
    recipe = _recipe(regs)
    group = tmp_path / "g"
    mine, stamped = group / "zz-mine", group / "20250101-000000"
    write_recipe(mine, recipe, regs)
    _checkpoint(mine, recipe, regs, step=5)
    write_recipe(stamped, recipe, regs)  # started now, after mine
    _checkpoint(stamped, recipe, regs, step=5)
    assert run_started(stamped) > run_started(mine)
    assert find_resumable(group, recipe) == stamped and resolve_run(group) == stamped
    started = yaml.safe_load((mine / "recipe.yaml").read_text())["_provenance"]["started"]
    write_recipe(mine, recipe, regs)  # a later session rewrites the recipe and keeps the start
    assert yaml.safe_load((mine / "recipe.yaml").read_text())["_provenance"]["started"] == started


def test_find_resumable_orders_same_second_runs_by_their_suffix(regs, tmp_path):
    recipe = _recipe(regs)
    group = tmp_path / "g"
    for name in ("20250101-000000-9", "20250101-000000-10"):  # -10 is the newer (new_run_dir counts up)
        _checkpoint(group / name, recipe, regs, step=5)
    assert find_resumable(group, recipe) == group / "20250101-000000-10"


def test_resolve_run(regs, tmp_path):
    recipe = _recipe(regs)
    group = tmp_path / "g"
    old, new = group / "20250101-000000", group / "20250102-000000"
    for run in (old, new):
        write_recipe(run, recipe, regs)
    assert resolve_run(old) == old  # a run directory is itself
    assert resolve_run(group) == new  # no checkpoint anywhere: the newest run
    _checkpoint(old, recipe, regs)
    assert resolve_run(str(group)) == old  # the newest run with a checkpoint
    with pytest.raises(CheckpointError, match="not a run directory"):
        resolve_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: not a run directory"):
        resolve_run(tmp_path / "empty")


def test_write_recipe_records_provenance_and_reads_back(regs, tmp_path):
    from fewstep.version import __version__

    recipe = _recipe(regs, train={"lr": 3e-4})
    path = write_recipe(tmp_path, recipe, regs)
    data = yaml.safe_load(path.read_text())
    prov = data["_provenance"]
    assert prov["fewstep"] == __version__ and "written" in prov and "git" in prov
    assert prov["plugins"]["core"].startswith("fewstep")
    assert recipe_dict(load_run_recipe(tmp_path, regs)) == recipe_dict(recipe)


def test_load_run_recipe_errors(regs, tmp_path):
    with pytest.raises(CheckpointError, match=r"recipe.yaml: unreadable \(cannot read: No such file"):
        load_run_recipe(tmp_path, regs)
    (tmp_path / "recipe.yaml").write_bytes(b"train: {lr: \xff\xfe}\n")
    with pytest.raises(CheckpointError, match=r"recipe.yaml: unreadable \(1 not UTF-8 text"):
        load_run_recipe(tmp_path, regs)
    (tmp_path / "recipe.yaml").write_text("- a\n- list\n")
    with pytest.raises(CheckpointError, match=r"recipe.yaml: unreadable \(1:1 a recipe is a mapping of sections"):
        load_run_recipe(tmp_path, regs)
    (tmp_path / "recipe.yaml").write_text("train: {lr: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"recipe.yaml: unreadable \(2:1 YAML syntax error"):
        load_run_recipe(tmp_path, regs)


def test_load_run_returns_the_checkpoint_step_and_the_ema_or_raw_weights(regs, tmp_path):
    recipe = _recipe(regs)
    run = tmp_path / "g" / "20250101-000000"
    write_recipe(run, recipe, regs)
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        load_run(run, regs, "cpu")
    raw, ema = _checkpoint(run, recipe, regs, step=7, ema_shift=0.5)
    found, comps, fm, step = load_run(tmp_path / "g", regs, "cpu")
    assert (found, step) == (run, 7) and fm is comps.flowmap and not comps.net.training
    assert comps.objective is None
    for a, b in zip(comps.net.parameters(), ema.parameters()):
        assert torch.equal(a, b)  # eval.use_ema defaults to the EMA weights
    _, comps, _, _ = load_run(run, regs, "cpu", use_ema=False)
    for a, b in zip(comps.net.parameters(), raw.parameters()):
        assert torch.equal(a, b)


def test_a_run_on_other_data_goes_to_its_own_group(regs, tmp_path, write):
    path = write("toy.yaml", "data: {name: eight_gaussians}\nnetwork: mlp\nobjective: fm\n")
    from fewstep.config import load_recipe

    def group(*sets):
        return group_dir(load_recipe(path, list(sets), regs), path, list(sets))

    assert group() == Path("runs") / "toy" and group("data.std=0.2") == Path("runs") / "toy"
    assert group("data.name=moons") == Path("runs") / "toy-moons"
    assert group("data=moons") == Path("runs") / "toy-moons"
