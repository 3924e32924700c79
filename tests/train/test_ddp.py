"""Two processes through torchrun (gloo, CPU) take the same steps as one process accumulating the
same two shards, and keep equal weights on both ranks."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from fewstep.api import train_recipe
from fewstep.run.checkpoint import latest_checkpoint
from fewstep.run.records import read_metrics
from fewstep.testing.distributed import assert_same_steps, torchrun_env

RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 32, depth: 2, emb_dim: 8, dropout: 0.1}
flowmap: {parameterisation: euler_fm}
objective: {name: imm, group_size: 4, k: 8}
train: {steps: 6, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 3, threads: 1,
        loggers: [jsonl, tensorboard]}
eval: {steps: [1], reference_steps: null, n_samples: 64, metrics: [energy]}
"""


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(write, tmp_path, regs):
    recipe = write("ddp.yaml", RECIPE)
    two, one = tmp_path / "two", tmp_path / "one"
    env = torchrun_env()
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "fewstep", "train", str(recipe), "--run-dir", str(two), "-q"],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    train_recipe(recipe, ["train.accumulate=2"], run_dir=one, registries=regs, progress=False)
    assert_same_steps(two, one, [2, 4, 6])
    assert all(len(r["rank_checksums"]) == 2 for r in read_metrics(two))
    wa, wb = (load_file(latest_checkpoint(r) / "model.safetensors") for r in (two, one))
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wb)
    assert (two / "samples" / "step_0000006.png").exists()  # rank 0 drew the grid
    assert len(list((two / "tensorboard").glob("events.*"))) == 1  # and alone logged
    assert out.stdout.strip() == str(two)  # rank 0 alone prints the run directory

    # sharded evaluation: both processes sample, rank 0 measures and reports
    ev = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                         "-m", "fewstep", "eval", str(two), "--samples", "101", "--steps", "1,2", "--json"],
                        env=env, capture_output=True, text=True, timeout=180)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads(ev.stdout)  # one JSON document: rank 1 printed nothing
    assert report["processes"] == 2 and report["n_samples"] == 101
    assert [r["nfe"] for r in report["rows"]] == [1, 2] and all(r["energy"] > 0 for r in report["rows"])
    assert json.loads((two / "eval.json").read_text())["rows"] == report["rows"]
