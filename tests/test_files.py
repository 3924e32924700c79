"""fewstep.files: atomic writes of files and folders (replace on success, leave the old one on failure)."""
from __future__ import annotations

import json
import os
import stat

import pytest

from fewstep.files import atomic_dir, atomic_path, write_json, write_text


class Boom(Exception):
    pass


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    """The user's umask: files get the mode a plain ``open`` would give under it (mkstemp, mkdtemp and
    safetensors would give 0600 / 0700 whatever it is)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_writes_beside_the_target_then_renames(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target  # same folder: os.replace stays atomic
        tmp.write_text("new")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_leaves_the_old_file_and_no_temporary_when_the_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise Boom
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "never.txt") as tmp:
            tmp.write_text("x")
            raise Boom
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_creates_parents_and_gives_the_mode_open_would(tmp_path, umask):
    target = tmp_path / "a" / "b" / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert _mode(target) == _mode(plain) == 0o666 & ~umask


def test_atomic_dir_fills_a_new_folder(tmp_path, umask):
    target = tmp_path / "deep" / "ckpt"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.is_dir()
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert _mode(target) == 0o777 & ~umask
    assert os.listdir(target.parent) == ["ckpt"]


def test_atomic_dir_replaces_an_existing_folder_whole(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("fresh")
    assert sorted(os.listdir(target)) == ["fresh.txt"]  # not merged: the old folder is gone
    assert os.listdir(tmp_path) == ["ckpt"]  # no .old or .tmp folder left behind


def test_atomic_dir_leaves_the_old_folder_and_no_temporary_when_the_block_raises(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "good.txt").write_text("good")
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "good.txt").write_text("half")
            raise Boom
    assert os.listdir(target) == ["good.txt"] and (target / "good.txt").read_text() == "good"
    assert os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "new"):
            raise Boom
    assert os.listdir(tmp_path) == ["ckpt"]


def test_write_text_is_utf8_and_returns_the_path(tmp_path):
    out = write_text(str(tmp_path / "sub" / "r.yaml"), "σ_d: 0.5 — ok\n")
    assert out == tmp_path / "sub" / "r.yaml"
    assert out.read_bytes() == "σ_d: 0.5 — ok\n".encode("utf-8")
    write_text(out, "second")
    assert out.read_text() == "second"


def test_write_json_round_trips(tmp_path):
    data = {"rows": [{"steps": 1, "energy": 0.25}], "floor": {"energy": 1e-4}, "name": "ünï"}
    out = write_json(tmp_path / "eval.json", data)
    assert json.loads(out.read_text(encoding="utf-8")) == data
    assert out.read_text().startswith("{\n \"rows\"")  # indented (one space) for people reading it
    with pytest.raises(TypeError):
        write_json(out, {"bad": object()})
    assert json.loads(out.read_text()) == data  # a failed write keeps the old file
    assert os.listdir(tmp_path) == ["eval.json"]


def test_what_safetensors_writes_in_an_atomic_dir_gets_the_mode_open_would(tmp_path, umask):
    """safetensors creates its files 0600: a checkpoint folder's weights were unreadable to a group."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "sub").mkdir()
    assert _mode(target / "model.safetensors") == 0o666 & ~umask
    assert _mode(target / "sub") == 0o777 & ~umask
