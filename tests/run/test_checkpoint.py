"""fewstep.run.checkpoint: checkpoint folders, atomic saves that keep the newest, guarded loads."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from fewstep.errors import CheckpointError
from fewstep.run.checkpoint import (
    FILES,
    checkpoint_dirs,
    checkpoint_step,
    latest_checkpoint,
    load_config,
    load_state,
    load_weights,
    save_checkpoint,
)


def _net(seed=0, width=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, width), nn.BatchNorm1d(width), nn.Linear(width, 2))


def _fake_ckpt(run, name, files=FILES):
    d = run / "checkpoints" / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_text("x")
    return d


def test_checkpoint_step_reads_the_folder_name(tmp_path):
    assert checkpoint_step(tmp_path / "step_0001000") == 1000
    assert checkpoint_step("step_7") == 7


@pytest.mark.parametrize("name", ["step_", "step_12a", "steps_10", ".step_0000010.abc.tmp", "step_-1"])
def test_checkpoint_step_refuses_other_names(name):
    with pytest.raises(CheckpointError, match=f"{name}: not a checkpoint folder"):
        checkpoint_step(name)


def test_checkpoint_dirs_without_checkpoints(tmp_path):
    assert checkpoint_dirs(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    assert checkpoint_dirs(tmp_path / "missing") == []


def test_checkpoint_dirs_keeps_complete_step_folders_sorted_by_step(tmp_path):
    _fake_ckpt(tmp_path, "step_0000100")
    _fake_ckpt(tmp_path, "step_10")  # other padding: still step 10
    _fake_ckpt(tmp_path, "step_0000020")
    _fake_ckpt(tmp_path, "step_0000500", files=FILES[:-1])  # incomplete: no state.pt
    _fake_ckpt(tmp_path, ".step_0000900.abc.tmp")  # a temporary of atomic_dir
    _fake_ckpt(tmp_path, "best")
    (tmp_path / "checkpoints" / "step_0000700").write_text("a file, not a folder")
    names = [d.name for d in checkpoint_dirs(tmp_path)]
    assert names == ["step_10", "step_0000020", "step_0000100"]
    assert latest_checkpoint(tmp_path).name == "step_0000100"


def test_save_writes_every_file_and_loads_back(tmp_path):
    net, ema = _net(0), _net(1)
    ema[1].running_mean.fill_(0.25)  # buffers are saved too
    ckpt = save_checkpoint(tmp_path, 30, net, ema, {"optimizer": {"x": torch.ones(2)}}, {"train": {"steps": 60}})
    assert ckpt == tmp_path / "checkpoints" / "step_0000030"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(FILES)
    assert load_config(ckpt) == {"step": 30, "recipe": {"train": {"steps": 60}}}
    state = load_state(ckpt)
    assert state["step"] == 30 and torch.equal(state["optimizer"]["x"], torch.ones(2))
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"step": "30"}
    fresh_net, fresh_ema = _net(5), _net(6)
    load_weights(ckpt / "model.safetensors", fresh_net)
    load_weights(ckpt / "ema.safetensors", fresh_ema)
    for a, b in ((net, fresh_net), (ema, fresh_ema)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    assert fresh_ema[1].running_mean.eq(0.25).all()


def test_save_keeps_the_newest_checkpoints(tmp_path):
    net = _net()
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, net, net, {}, {}, keep=2)
    assert [d.name for d in checkpoint_dirs(tmp_path)] == ["step_0000030", "step_0000040"]
    save_checkpoint(tmp_path, 50, net, net, {}, {}, keep=1)
    assert [d.name for d in checkpoint_dirs(tmp_path)] == ["step_0000050"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000050"]  # nothing else left


def test_saving_a_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 10, _net(0), _net(0), {"v": 1}, {})
    save_checkpoint(tmp_path, 10, _net(1), _net(1), {"v": 2}, {})
    ckpt = latest_checkpoint(tmp_path)
    assert load_state(ckpt)["v"] == 2
    net = _net(7)
    load_weights(ckpt / "model.safetensors", net)
    assert torch.equal(net[0].weight, _net(1)[0].weight)


def test_load_weights_refuses_other_keys_or_shapes_and_leaves_the_module_alone(tmp_path):
    ckpt = save_checkpoint(tmp_path, 1, _net(0), _net(0), {}, {})
    path = ckpt / "model.safetensors"
    other = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))  # no BatchNorm: keys 1.* differ
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(CheckpointError, match=r"model.safetensors: does not match the recipe's network \(unexpected"):
        load_weights(path, other)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    bigger = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"does not match the recipe's network \(missing \['3.bias'"):
        load_weights(path, bigger)
    wider = _net(0, width=4)
    with pytest.raises(CheckpointError, match=r"\(0.weight: \(3, 2\) vs \(4, 2\)\)"):
        load_weights(path, wider)


def test_load_weights_refuses_corrupt_or_missing_files_naming_them(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=f"{bad}: unreadable checkpoint"):
        load_weights(bad, _net())
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_weights(bad, _net())
    with pytest.raises(CheckpointError, match="nowhere.safetensors: unreadable checkpoint"):
        load_weights(tmp_path / "nowhere.safetensors", _net())


_RAN = []


def _side_effect():
    _RAN.append("ran")
    return "pwned"


class Sneaky:
    """Unpickling this runs code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (_side_effect, ())


def test_load_state_uses_weights_only(tmp_path):
    ckpt = tmp_path / "step_0000001"
    ckpt.mkdir()
    torch.save({"step": 1, "x": Sneaky()}, ckpt / "state.pt")
    with pytest.raises(CheckpointError, match=r"state.pt: unreadable training state \(UnpicklingError\)"):
        load_state(ckpt)
    assert _RAN == []


def test_load_state_and_config_refuse_missing_or_corrupt_files(tmp_path):
    ckpt = tmp_path / "step_0000001"
    ckpt.mkdir()
    with pytest.raises(CheckpointError, match="state.pt: unreadable training state"):
        load_state(ckpt)
    (ckpt / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="state.pt: unreadable training state"):
        load_state(ckpt)
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load_config(ckpt)
    (ckpt / "config.json").write_text("{\"step\": ")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load_config(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"step": 1, "recipe": {}}))
    assert load_config(ckpt)["step"] == 1
