"""Resuming a CT run continues its curriculum: the run length it was sized for is kept in the run's state."""
from __future__ import annotations

import pytest
import torch

from fewstep.api import train_recipe
from fewstep.run.checkpoint import latest_checkpoint
from fewstep.run.records import read_metrics
from fewstep_ct.curriculum import num_points

RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 16, depth: 1, emb_dim: 8}
flowmap: {parameterisation: euler_fm}
objective: {name: ct, s0: 10, s1: 80}
train: {steps: 40, batch_size: 16, optimizer: adam, lr: 1e-3, log_every: 5, checkpoint_every: 10, threads: 1}
"""


def test_extending_train_steps_on_resume_continues_the_curriculum(write, tmp_path, regs):
    """iCT's N(k) = min(s0 2^floor(k/K'), s1) + 1 with K' = K / (log2(s1/s0) + 1) (iCT §3.4): a run sized
    for K = 40 steps has stages of 10 steps (N = 11, 21, 41, 81). Extended to 80 steps at step 20, it must
    go on with N = 41 at steps 20-29, not restart the curriculum for K = 80 (N = 21 until step 40)."""
    path = write("ct.yaml", RECIPE + f"output: {{dir: {tmp_path}}}\n")
    first = train_recipe(path, registries=regs, progress=False, stop_after=20)
    resumed = train_recipe(path, ["train.steps=80"], registries=regs, progress=False)
    assert resumed.run_dir == first.run_dir and (resumed.start_step, resumed.end_step) == (20, 80)
    logged = {r["step"]: r["ct_N"] for r in read_metrics(resumed.run_dir)}
    # a record at step k averages steps k-4..k; N(k) of the 40-step curriculum, constant over each record
    assert logged == {k: float(num_points(k - 1, 40, 10, 80)) for k in range(5, 81, 5)}
    assert logged[25] == 41.0 and num_points(24, 80, 10, 80) == 21  # the other curriculum would differ here
    state = torch.load(latest_checkpoint(resumed.run_dir) / "state.pt", weights_only=True)
    assert state["objective"] == {"total_steps": 40, "stage_every": 3_200_000 // 16}  # ECT's 3.2 Mimg at batch 16


@pytest.mark.parametrize("mapping, key", [("ict", "ct_N"), ("ect", "ct_stage")])
def test_every_metrics_line_carries_the_curriculum_position(write, tmp_path, regs, mapping, key):
    path = write("ct.yaml", RECIPE.replace("{name: ct,", f"{{name: ct, mapping: {mapping},")
                 + f"output: {{dir: {tmp_path}}}\n")
    run = train_recipe(path, ["train.steps=10"], registries=regs, progress=False).run_dir
    records = read_metrics(run)
    assert [r["step"] for r in records] == [5, 10] and all(key in r for r in records)
