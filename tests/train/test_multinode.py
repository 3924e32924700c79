"""Beyond one machine, on this one (gloo, loopback only): two torchrun "nodes" joined by a c10d rendezvous
take the steps of one process accumulating two shards, and an elastic run whose worker is killed mid-run
(``--max-restarts=1``) is restarted by torchrun, resumes from its last checkpoint and ends with the weights
of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fewstep.api import train_recipe
from fewstep.run.checkpoint import checkpoint_dirs, latest_checkpoint
from fewstep.run.records import read_metrics
from fewstep.testing.distributed import assert_same_steps, torchrun_env

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 32, depth: 2, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: imm, group_size: 4, k: 8}}
train: {{steps: {steps}, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: {log}, checkpoint_every: {every},
        keep_checkpoints: 50, threads: 1}}
eval: {{steps: [1], reference_steps: null, n_samples: 64, metrics: [energy]}}
"""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict:
    return torchrun_env(OMP_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run: Path) -> dict:
    return load_file(latest_checkpoint(run) / "model.safetensors")


def test_two_nodes_through_a_c10d_rendezvous_match_one_process_accumulating_two_shards(write, tmp_path, regs):
    recipe = write("mn.yaml", RECIPE.format(steps=6, log=2, every=3))
    two, one = tmp_path / "two", tmp_path / "one"
    endpoint = f"127.0.0.1:{_free_port()}"
    logs = [(tmp_path / f"node{i}.out", tmp_path / f"node{i}.err") for i in range(2)]
    nodes = []
    for i, (out, err) in enumerate(logs):  # files, not pipes: a node blocked on a full pipe would stall both
        with out.open("w") as o, err.open("w") as e:
            nodes.append(subprocess.Popen([*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={i}",
                                           "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                                           "--rdzv-id=fewstep-test", "-m", "fewstep", "train", str(recipe),
                                           "--run-dir", str(two), "-q"], env=_env(), stdout=o, stderr=e))
    try:
        for n in nodes:
            n.wait(timeout=240)
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
    for n, (_, err) in zip(nodes, logs):
        assert n.returncode == 0, err.read_text()[-3000:]
    assert sorted(out.read_text().strip() for out, _ in logs) == ["", str(two)]  # global rank 0 alone prints
    train_recipe(recipe, ["train.accumulate=2"], run_dir=one, registries=regs, progress=False)
    assert_same_steps(two, one, [2, 4, 6])
    wa, wb = _weights(two), _weights(one)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wb)


def _workers(agent: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of the worker processes torchrun's agent ``agent`` started (from /proc)."""
    out = {}
    for task in Path(f"/proc/{agent}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e.split(b"=", 1)[1] for e in env if e.startswith(b"LOCAL_RANK=")]
            if rank:
                out[int(rank[0])] = int(child)
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_worker_is_restarted_and_the_run_ends_with_the_uninterrupted_weights(write, tmp_path):
    steps, every = 1000, 50  # ~7 s on one CPU core per process: time to kill a worker after a checkpoint
    recipe = write("el.yaml", RECIPE.format(steps=steps, log=every, every=every))
    elastic, straight = tmp_path / "elastic", tmp_path / "straight"
    args = ["--standalone", "--nproc_per_node=2", "-m", "fewstep", "train", str(recipe), "-q", "--run-dir"]
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads while polling (the workers would block)
        agent = subprocess.Popen([*TORCHRUN, "--max-restarts=1", *args, str(elastic)], env=_env(), stdout=out,
                                 stderr=subprocess.STDOUT)
        deadline, killed = time.monotonic() + 120, False
        try:
            while not killed and time.monotonic() < deadline and agent.poll() is None:
                workers = _workers(agent.pid)
                if (elastic / "checkpoints").exists() and checkpoint_dirs(elastic) and 1 in workers:
                    os.kill(workers[1], signal.SIGKILL)  # a worker dies (OOM killer, a lost GPU)
                    killed = True
                time.sleep(0.02)
            agent.wait(timeout=240)
        finally:
            if agent.poll() is None:
                agent.kill()
    err = log.read_text()
    assert killed, "the run ended before a worker could be killed"
    assert agent.returncode == 0, err[-3000:]
    assert "resuming at step" in err  # the restarted group resumed from the last complete checkpoint
    subprocess.run([*TORCHRUN, *args, str(straight)], env=_env(), check=True, capture_output=True, timeout=240)
    wa, wb = _weights(elastic), _weights(straight)
    assert all(torch.equal(wa[k], wb[k]) for k in wb)  # bit for bit: same seeds per step, same reductions
    steps_logged = [r["step"] for r in read_metrics(elastic)]
    assert steps_logged == list(range(every, steps + 1, every))  # records after the checkpoint logged once


def test_sigterm_to_torchrun_stops_every_worker_at_one_step_with_a_checkpoint(write, tmp_path):
    """What a scheduler does before preemption: SIGTERM to the agent, which passes it to the workers; they
    finish the step, rank 0 writes a checkpoint of that step and says how to resume."""
    recipe = write("st.yaml", RECIPE.format(steps=100000, log=50, every=50))
    run, log = tmp_path / "run", tmp_path / "torchrun.log"
    with log.open("w") as out:
        agent = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "fewstep", "train",
                                  str(recipe), "--run-dir", str(run)], env=_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not ((run / "checkpoints").exists() and checkpoint_dirs(run)) and time.monotonic() < deadline:
                time.sleep(0.05)
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
        finally:
            if agent.poll() is None:
                agent.kill()
    text = log.read_text()
    stop = [line for line in text.splitlines() if line.startswith("stopped: SIGTERM at step ")]
    assert len(stop) == 1, text[-3000:]  # rank 0 alone says it
    step = int(stop[0].split("at step ")[1].split()[0])
    assert latest_checkpoint(run).name == f"step_{step:07d}" and f"--run-dir {run}" in stop[0]
