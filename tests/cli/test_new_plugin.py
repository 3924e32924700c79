"""``fewstep new-plugin``: the scaffold is a working plugin whose own tests pass."""
from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from fewstep.cli import app

runner = CliRunner()


def test_scaffolded_plugin_registers_its_kernel_and_passes_its_own_tests(tmp_path):
    res = runner.invoke(app, ["new-plugin", "fewstep-my-kernels", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    root = tmp_path / "fewstep-my-kernels"
    assert {p.name for p in root.iterdir()} >= {"pyproject.toml", "fewstep_my_kernels", "tests", "README.md"}
    assert 'fewstep_my_kernels = "fewstep_my_kernels"' in (root / "pyproject.toml").read_text()
    env = {**os.environ, "PYTHONPATH": str(root), "FEWSTEP_PLUGINS": "fewstep_my_kernels"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout
    # and a recipe can use it, e.g. as IMM's kernel
    check = subprocess.run([sys.executable, "-m", "fewstep", "check", "recipes/imm_toy.yaml",
                            "--set", "objective.kernel=cauchy", "--show"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "cauchy" in check.stdout


def test_existing_folder_and_bad_names_are_refused(tmp_path):
    assert runner.invoke(app, ["new-plugin", "p1", "--dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["new-plugin", "p1", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["new-plugin", "9 bad"])
    assert bad.exit_code == 2 and "is not a package name" in bad.output
