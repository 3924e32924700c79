"""``fewstep train RECIPE``: the run directory on stdout, resume by default, --fresh, --stop-after, --run-dir."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewstep.testing.distributed import torchrun_env


def test_stop_after_then_the_same_command_resumes(tiny, cli):
    first = cli("train", tiny, "-q", "--stop-after", "10")
    assert first.exit_code == 0, first.output
    run = Path(first.stdout.strip())
    assert (run / "checkpoints" / "step_0000010").is_dir() and "trained steps 0..10" in first.stderr
    assert first.stderr.splitlines()[0] == f"{run}: a new run of 30 steps"  # said at the start
    again = cli("train", tiny, "-q")
    assert again.exit_code == 0 and Path(again.stdout.strip()) == run
    assert again.stderr.splitlines()[0] == f"{run}: resuming at step 10 of 30"
    assert "trained steps 10..30" in again.stderr


def test_fresh_starts_a_new_run_and_run_dir_names_one(tiny, cli, tmp_path):
    run = Path(cli("train", tiny, "-q", "--stop-after", "10").stdout.strip())
    fresh = Path(cli("train", tiny, "-q", "--fresh", "--stop-after", "10").stdout.strip())
    assert fresh != run and fresh.parent == run.parent
    named = cli("train", tiny, "-q", "--run-dir", tmp_path / "mine", "--stop-after", "10")
    assert named.exit_code == 0 and Path(named.stdout.strip()) == tmp_path / "mine"


def test_an_unfinished_run_with_other_settings_is_not_left_behind_silently(tiny, cli):
    run = cli("train", tiny, "-q", "--stop-after", "10").stdout.strip()
    res = cli("train", tiny, "-q", "--set", "train.lr=0.01")
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: {run} is unfinished (step 10 of 30) and was trained with other settings (train.lr differs): resume "
        f"it with `fewstep train {run}/recipe.yaml --run-dir {run}`, or start a new run beside it with --fresh")
    fresh = cli("train", tiny, "-q", "--set", "train.lr=0.01", "--fresh", "--stop-after", "5")
    assert fresh.exit_code == 0 and fresh.stdout.strip() != run
    back = cli("train", tiny, "-q", "--stop-after", "5")  # the first settings again: the first run, not a new one
    assert back.exit_code == 0 and back.stdout.strip() == run and f"{run}: resuming at step 10" in back.stderr


def test_run_dir_trained_with_another_recipe_is_refused(tiny, cli):
    run = cli("train", tiny, "-q", "--stop-after", "10").stdout.strip()
    res = cli("train", tiny, "-q", "--run-dir", run, "--set", "network.width=16")
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: {run}: its checkpoint was trained with a different recipe (differs in network.width); "
        "use --fresh for a new run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path, write, regs, sig):
    """A real `fewstep train` process gets the signal mid-run: it exits 130 with one line naming the run and
    the command that resumes it, from a checkpoint at the step it stopped; resumed, it takes exactly the steps
    of an uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    from fewstep.api import train_recipe
    from fewstep.run.checkpoint import latest_checkpoint

    recipe = write("long.yaml", LONG.format(out=tmp_path / "runs"))
    env = torchrun_env()
    proc = subprocess.Popen([sys.executable, "-m", "fewstep", "train", str(recipe), "--set", "train.lr=2e-3", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    group, deadline = tmp_path / "runs" / "long", time.monotonic() + 120
    while not list(group.glob("*/metrics.jsonl")) or len(next(group.glob("*/metrics.jsonl")).read_text()
                                                          .splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = next(group.iterdir())
    step = int(latest_checkpoint(run).name.split("_")[1])
    assert step >= 30 and step % 1000 != 0  # written for the signal, not at an interval
    line = err.strip().splitlines()[-1]
    resume = f"fewstep train {recipe} --set train.lr=2e-3 --run-dir {run}"
    assert line == f"stopped: {signal.Signals(sig).name} at step {step} of 100000: checkpoint written in {run}; " \
                   f"resume with: {resume}"
    again = subprocess.run([sys.executable, "-m", *resume.split(), "--stop-after", "5", "-q"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[0] == f"{run}: resuming at step {step} of 100000"
    straight = train_recipe(recipe, ["train.lr=2e-3"], fresh=True, registries=regs, progress=False,
                            stop_after=step + 5)
    a, b = (load_file(latest_checkpoint(r) / "model.safetensors") for r in (run, straight.run_dir))
    assert latest_checkpoint(run).name == latest_checkpoint(straight.run_dir).name
    assert all(torch.equal(a[k], b[k]) for k in a)


LONG = """\
data: {{name: moons}}
network: {{name: mlp, width: 32, depth: 2, emb_dim: 16}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
train: {{steps: 100000, batch_size: 64, optimizer: adam, lr: 1e-3, log_every: 10, checkpoint_every: 1000, threads: 1}}
output: {{dir: {out}}}
"""
