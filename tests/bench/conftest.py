"""Fixtures of the bench tests: two tiny recipes (FM and IMM) and a bench file over two data sets."""
from __future__ import annotations

import pytest

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 2, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {obj}
train: {{steps: 20, batch_size: 64, optimizer: adam, lr: 1e-3, log_every: 5, checkpoint_every: 10}}
"""

BENCH = """\
name: tiny
entries:
  fm: {recipe: fm.yaml, label: FM}
  imm: {recipe: imm.yaml}
data: [eight_gaussians, {name: moons, noise: 0.1}]
shared:
  train.steps: 20
  network.width: 16
eval: {steps: [1, 2], reference_steps: 4, n_samples: 128, metrics: [energy, sw2], seeds: [0, 1]}
checks: ["energy: imm@1 <= fm@4", "sw2: fm@1 < 100 * imm@2"]
"""


@pytest.fixture
def bench_file(write):
    write("fm.yaml", RECIPE.format(obj="{name: fm}"))
    write("imm.yaml", RECIPE.format(obj="{name: imm, group_size: 4, k: 6}"))
    return write("tiny.yaml", BENCH)
