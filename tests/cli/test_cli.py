"""The CLI as a whole (fewstep/cli/__init__.py): --help without torch, one-line errors from the console
script, FEWSTEP_DEBUG, and train -> eval -> sample end to end."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def test_help_is_fast_and_imports_no_torch(cli):
    code = ("import sys; from fewstep.cli import main; sys.argv=['fewstep','--help']\ntry: main()\n"
            "except SystemExit: pass\nassert 'torch' not in sys.modules")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - t0 < 3.0  # about 0.3 s here; generous for a loaded CI machine
    assert "train" in out.stdout and "eval" in out.stdout


def test_train_eval_sample_end_to_end(tiny, tmp_path, cli):
    res = cli("train", tiny, "--quiet")
    assert res.exit_code == 0, res.stderr
    run_dir = res.stdout.strip().splitlines()[-1]
    res = cli("eval", tmp_path / "runs" / "tiny", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert [r["steps"] for r in out["rows"]] == [1, 2, 4] and [r["nfe"] for r in out["rows"]] == [1, 2, 4]
    assert set(out["floor"]) == {"sw2", "energy"} and out["run"] == run_dir
    res = cli("eval", run_dir)
    assert res.exit_code == 0 and "data floor" in res.stdout and "4 (reference)" in res.stdout
    png = tmp_path / "grid.png"
    res = cli("sample", run_dir, "--steps", "1,2", "--n", "64", "--out", png, "--sampler", "heun")
    assert res.exit_code == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_debug_shows_the_traceback(tiny, write, monkeypatch, cli):
    monkeypatch.setenv("FEWSTEP_DEBUG", "1")
    res = cli("check", write("bad.yaml", "data: [\n"))
    assert res.exit_code == 1 and res.exception is not None


@pytest.mark.parametrize("args, expect", [
    (["eval", "runs/x", "--samples", "1"], "error: fewstep eval: Invalid value for '--n' / '--samples': "),
    (["sample", "runs/x", "--seed", str(2**64)], "error: fewstep sample: Invalid value for '--seed': "),
    (["sample", "runs/x", "--steps", "1,x"], "error: fewstep sample: Invalid value for --steps: expected comma"),
    (["nosuch"], "error: fewstep: No such command 'nosuch'."),
    (["check"], "error: fewstep check: Missing argument 'RECIPE'."),
])
def test_a_bad_flag_is_one_line_exit_2(args, expect, tmp_path, cli):
    """The console script (not Typer's runner): Click's usage block becomes one line."""
    out = subprocess.run([sys.executable, "-m", "fewstep", *args], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(expect), out.stderr


def test_version_and_bare_fewstep_print_and_exit_0(tmp_path):
    from fewstep.version import __version__

    version = subprocess.run([sys.executable, "-m", "fewstep", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"fewstep {__version__}"
    bare = subprocess.run([sys.executable, "-m", "fewstep"], capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 0 and bare.stdout.startswith("Usage: fewstep") and bare.stderr == ""


def test_every_command_shows_examples_with_their_line_breaks(cli):
    from fewstep.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) == 11
    for name in names:
        text = cli(name, "-h").stdout
        assert "Example" in text, name
        block = text.split("Example")[1].split("\n\n")[0].splitlines()[1:]
        assert block and all(line.startswith("    ") for line in block), (name, block)
        assert all(line.strip().startswith(("fewstep", "torchrun", "--")) for line in block), (name, block)


def test_help_uses_plain_metavars_and_examples_use_real_flags(cli):
    """``RUN`` and ``--seed SEED``, not Typer's ``{RUN}``, ``RUN <str>`` or ``<int range>``; and no
    example shows a flag its command does not take."""
    import re

    from fewstep.cli import app

    for command in app.registered_commands:
        text = cli(command.name, "-h").stdout
        usage = text.splitlines()[0]
        assert "{" not in usage, usage
        rows = [line for line in text.splitlines() if line.startswith("  -") or re.match(r"  [A-Z]", line)]
        assert rows and not [row for row in rows if re.search(r"^  \S+( \S+)? <[a-z ]+>", row)], (command.name, rows)
        flags = set(re.findall(r"(?m)^  (?:-\w, )?(--[\w-]+)", text)) | set(re.findall(r", (--[\w-]+)", text))
        examples = text.split("Example")[1].split("\n\n")[0]
        torchrun = {"--nproc_per_node", "--standalone", "--nnodes"}
        used = {f for f in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", examples) if f not in torchrun}
        assert used <= flags, (command.name, used - flags)


@pytest.mark.parametrize("args, expect", [
    (["train", "RECIPES/bench_toy.yaml"], "RECIPES/bench_toy.yaml: a bench file (it has entries), not a recipe; run "
                                          "it with `fewstep bench RECIPES/bench_toy.yaml`"),
    (["bench", "RECIPES/fm_toy.yaml"], "RECIPES/fm_toy.yaml: a recipe (it has an objective), not a bench file; "
                                       "train it with `fewstep train RECIPES/fm_toy.yaml`"),
    (["eval", "RECIPES/fm_toy.yaml"], "RECIPES/fm_toy.yaml: a recipe file, not a run; train it with "
                                      "`fewstep train RECIPES/fm_toy.yaml`"),
    (["check", "RECIPES/fm_toy"], "error: RECIPES/fm_toy: cannot read: No such file or directory; did you mean "
                                  "RECIPES/fm_toy.yaml?"),
    (["check", "RECIPES/fm_toy.yaml", "--set", "train.stepz=3"], "train.stepz: unknown field; did you mean 'steps'?"),
    (["check", "RECIPES/fm_toy.yaml", "--set", "objective.time_samplng=x"],
     "objective.time_samplng: unknown field; did you mean 'time_sampling'?"),
])
def test_a_file_of_the_wrong_kind_or_a_typo_is_one_line_saying_what_to_do(args, expect, cli):
    from pathlib import Path

    recipes = str(Path(__file__).resolve().parents[2] / "recipes")
    res = cli(*[a.replace("RECIPES", recipes) for a in args])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and expect.replace("RECIPES", recipes) in lines[0], res.stderr
