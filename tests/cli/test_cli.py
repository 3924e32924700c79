"""The CLI through Typer's runner: exit codes, clean stderr, and the commands end to end."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from fewstep.cli import app

runner = CliRunner()

TINY = """\
data: {{name: moons}}
network: {{name: mlp, width: 32, depth: 2, emb_dim: 16}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
train: {{steps: 30, batch_size: 128, optimizer: adam, lr: 1e-3, log_every: 10, checkpoint_every: 30}}
eval: {{steps: [1, 2], reference_steps: 4, n_samples: 256, metrics: [sw2, energy]}}
output: {{dir: {out}}}
"""


@pytest.fixture
def tiny(tmp_path, write):
    return write("tiny.yaml", TINY.format(out=tmp_path / "runs"))


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_is_fast_and_imports_no_torch():
    code = ("import sys; from fewstep.cli import main; sys.argv=['fewstep','--help']\ntry: main()\n"
            "except SystemExit: pass\nassert 'torch' not in sys.modules")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - t0 < 3.0  # about 0.3 s here; generous for a loaded CI machine
    assert "train" in out.stdout and "eval" in out.stdout


def test_check_accepts_a_good_recipe(tiny):
    res = run("check", tiny)
    assert res.exit_code == 0 and "ok (fm on moons" in res.stdout
    res = run("check", tiny, "--show", "--set", "train.lr=3e-4")
    assert "lr: 0.0003" in res.stdout and "sampler:" in res.stdout


@pytest.mark.parametrize("bad, expect", [
    ("width: 32", "width: [", ),
    ("name: fm", "name: fn"),
])
def test_bad_recipes_exit_2_with_one_line_and_no_traceback(tiny, write, bad, expect):
    path = write("bad.yaml", tiny.read_text().replace(bad, expect))
    res = run("check", path)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:") and "Traceback" not in res.stderr


def test_wrong_type_line(tiny, write):
    path = write("bad.yaml", tiny.read_text().replace("width: 32", "width: wide"))
    res = run("check", path)
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"{path}:2:22 network.width: input should be a valid integer, "
                                  "unable to parse string as an integer")


def test_bad_flag_value_is_a_usage_error(tiny):
    res = run("eval", tiny.parent, "--steps", "1,x")
    assert res.exit_code == 2 and "comma-separated step counts" in res.stderr


def test_train_eval_sample_end_to_end(tiny, tmp_path):
    res = run("train", tiny, "--quiet")
    assert res.exit_code == 0, res.stderr
    run_dir = res.stdout.strip().splitlines()[-1]
    res = run("eval", tmp_path / "runs" / "tiny", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert [r["steps"] for r in out["rows"]] == [1, 2, 4] and [r["nfe"] for r in out["rows"]] == [1, 2, 4]
    assert set(out["floor"]) == {"sw2", "energy"} and out["run"] == run_dir
    res = run("eval", run_dir)
    assert res.exit_code == 0 and "data floor" in res.stdout and "4 (reference)" in res.stdout
    png = tmp_path / "grid.png"
    res = run("sample", run_dir, "--steps", "1,2", "--n", "64", "--out", png, "--sampler", "heun")
    assert res.exit_code == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_a_missing_run_is_clean(tmp_path):
    res = run("eval", tmp_path)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "not a run directory" in res.stderr


def test_unknown_sampler_flag(tiny):
    assert run("train", tiny, "--quiet").exit_code == 0
    res = run("sample", tiny.parent / "runs" / "tiny", "--sampler", "eular")
    assert res.exit_code == 2 and "did you mean 'euler'" in res.stderr


def test_plugins_lists_entries_with_their_plugin():
    res = run("plugins", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    objectives = {e["name"]: e["plugin"] for e in data["components"]["objectives"]}
    assert objectives["fm"] == "fm" and objectives["imm"] == "imm"
    assert {p["name"] for p in data["plugins"]} >= {"core", "fm", "imm"}
    res = run("plugins")
    assert res.exit_code == 0 and "pushforward" in res.stdout


def test_schema_is_json():
    res = run("schema")
    assert res.exit_code == 0 and "Objective_fm" in json.loads(res.stdout)["$defs"]


def test_debug_shows_the_traceback(tiny, write, monkeypatch):
    monkeypatch.setenv("FEWSTEP_DEBUG", "1")
    res = run("check", write("bad.yaml", "data: [\n"))
    assert res.exit_code == 1 and res.exception is not None


@pytest.mark.parametrize("args, expect", [
    (["eval", "runs/x", "--samples", "1"], "error: fewstep eval: Invalid value for '--n' / '--samples': "),
    (["sample", "runs/x", "--seed", str(2**64)], "error: fewstep sample: Invalid value for '--seed': "),
    (["sample", "runs/x", "--steps", "1,x"], "error: fewstep sample: Invalid value for --steps: expected comma"),
    (["nosuch"], "error: fewstep: No such command 'nosuch'."),
    (["check"], "error: fewstep check: Missing argument 'RECIPE'."),
])
def test_a_bad_flag_is_one_line_exit_2(args, expect, tmp_path):
    """The console script (not Typer's runner): Click's usage block becomes one line."""
    out = subprocess.run([sys.executable, "-m", "fewstep", *args], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(expect), out.stderr


def test_sample_out_must_be_a_file_name(tiny, tmp_path):
    assert run("train", tiny, "-q").exit_code == 0
    res = run("sample", tmp_path / "runs" / "tiny", "--out", tmp_path)
    assert res.exit_code == 2
    expect = f"error: --out {tmp_path}: is a folder; give a file name such as {tmp_path / 'samples.png'}"
    assert res.output.strip() == expect
