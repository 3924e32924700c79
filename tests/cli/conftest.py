"""Fixtures of the CLI tests: a tiny recipe whose runs go to the test's tmp folder."""
from __future__ import annotations

import pytest

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
    """A tiny FM recipe on moons; its runs go to tmp_path/runs/tiny/."""
    return write("tiny.yaml", TINY.format(out=tmp_path / "runs"))


@pytest.fixture
def cli():
    """cli(*args) -> the result of the fewstep app under Typer's runner (arguments turned into strings)."""
    from typer.testing import CliRunner

    from fewstep.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])
