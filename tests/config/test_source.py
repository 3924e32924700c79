"""Reading recipe and bench files: text that is not UTF-8, NUL and control characters, repeated keys,
and ``--set`` values; each is one line naming the file (or flag), and nothing is trained or written."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.config import load_recipe
from fewstep.config.source import load_yaml, parse_scalar
from fewstep.errors import RecipeError

TINY = "data: eight_gaussians\nnetwork: {name: mlp, width: 8, depth: 1, emb_dim: 4}\nobjective: fm\n"


def one_line(path, regs, overrides=()):
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, overrides, regs)
    [line] = exc.value.problems
    return line


def bytes_file(tmp_path, data: bytes):
    path = tmp_path / "r.yaml"
    path.write_bytes(data)
    return path


def test_a_file_that_is_not_utf8_is_one_line(tmp_path, regs):
    path = bytes_file(tmp_path, TINY.encode() + "# café\n".encode("latin-1"))
    assert one_line(path, regs) == f"{path}:4 not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_nul_bytes_are_one_line(tmp_path, regs):
    path = bytes_file(tmp_path, TINY.encode() + b"train: {steps: 1}\x00\n")
    assert one_line(path, regs) == f"{path}:4 not a text file (a NUL byte); a recipe is YAML text"
    png = bytes_file(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00")
    assert one_line(png, regs).endswith("(a NUL byte); a recipe is YAML text")


def test_a_control_character_is_one_line(tmp_path, regs):
    path = bytes_file(tmp_path, TINY.encode() + b"# bell \x07\n")
    assert one_line(path, regs) == f"{path}:4 not a YAML text: the character '\\x07' is not allowed"


def test_a_utf8_byte_order_mark_is_fine(tmp_path, regs):
    assert load_recipe(bytes_file(tmp_path, b"\xef\xbb\xbf" + TINY.encode()), registries=regs).objective.name == "fm"


def test_a_repeated_key_names_both_lines(write, regs):
    path = write("r.yaml", TINY + "train:\n  lr: 1e-3\n  steps: 10\n  lr: 1e-2\n")
    assert one_line(path, regs) == (f"{path}:7:3 duplicated key 'lr' (first at line 5; the later one would "
                                    "silently win)")
    flow = write("f.yaml", TINY + "train: {steps: 1, steps: 2}\n")
    assert one_line(flow, regs).startswith(f"{flow}:4:19 duplicated key 'steps' (first at line 4;")
    top = write("t.yaml", TINY + "objective: imm\n")
    assert one_line(top, regs).startswith(f"{top}:4:1 duplicated key 'objective' (first at line 3;")


def test_merge_keys_still_work(write, regs):
    assert load_yaml(write("m.yaml", "a: &a {x: 1}\nb: {<<: *a, x: 2}\n")).data["b"] == {"x": 2}


def test_set_values_are_checked_like_files(write, regs):
    path = write("r.yaml", TINY)
    assert one_line(path, regs, ["train={steps: 1, steps: 2}"]).startswith(
        "--set train={steps: 1, steps: 2}: duplicated key 'steps'")
    assert one_line(path, regs, ["output.name=a\x01b"]) == \
        "--set output.name=a\x01b: the value holds the control character '\\x01'"
    assert parse_scalar("3e-4") == 3e-4 and parse_scalar("[1, 2]") == [1, 2] and parse_scalar("a: b: c") == "a: b: c"


@pytest.mark.parametrize("data", [TINY.encode() + b"\x00", TINY.encode() + "é".encode("latin-1"),
                                  (TINY + "objective: fm\n").encode()], ids=["nul", "latin1", "duplicate"])
def test_cli_check_and_train_say_one_line_and_write_nothing(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    path = bytes_file(tmp_path, data)
    for cmd in (["check", str(path)], ["train", str(path), "-q"]):
        res = CliRunner().invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()


def test_a_bench_file_is_read_the_same_way(tmp_path):
    path = bytes_file(tmp_path, b"entries: {fm: {recipe: fm_toy.yaml}}\nseeds: [0]\nseeds: [1]\n")
    res = CliRunner().invoke(app, ["bench", str(path), "--check"])
    assert res.exit_code == 2 and res.output.strip() == (f"{path}:3:1 duplicated key 'seeds' (first at line 2; "
                                                         "the later one would silently win)")
