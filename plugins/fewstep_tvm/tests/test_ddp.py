"""TVM's two passes with gradients (the terminal rows' forward-mode pass and the FM rows' forward) before one
backward train under DDP: two gloo processes take the steps of one process accumulating the same two shards,
with equal weights on both ranks."""
from __future__ import annotations

import subprocess
import sys

from fewstep.api import train_recipe
from fewstep.testing.distributed import assert_same_steps, torchrun_env

RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 32, depth: 2, emb_dim: 8}
interpolant: {name: ot_fm, eps: 0.0, T: 1.0}
flowmap: {parameterisation: euler_fm, second_time: stride, time_scale: 1.0}
objective: {name: tvm}
train: {steps: 4, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 4, threads: 1}
eval: {steps: [1], reference_steps: null, n_samples: 64, metrics: [energy]}
"""


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(write, tmp_path, regs):
    recipe = write("tvm_ddp.yaml", RECIPE)
    two, one = tmp_path / "two", tmp_path / "one"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "fewstep", "train", str(recipe), "--run-dir", str(two), "-q"],
                         env=torchrun_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    train_recipe(recipe, ["train.accumulate=2"], run_dir=one, registries=regs, progress=False)
    assert_same_steps(two, one, [2, 4])  # both passes' gradients synchronised
