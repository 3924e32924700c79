"""``fewstep train RECIPE``: the run directory on stdout, resume by default, --fresh, --stop-after, --run-dir."""
from __future__ import annotations

from pathlib import Path


def test_stop_after_then_the_same_command_resumes(tiny, cli):
    first = cli("train", tiny, "-q", "--stop-after", "10")
    assert first.exit_code == 0, first.output
    run = Path(first.stdout.strip())
    assert (run / "checkpoints" / "step_0000010").is_dir() and "trained steps 0..10" in first.stderr
    again = cli("train", tiny, "-q")
    assert again.exit_code == 0 and Path(again.stdout.strip()) == run
    assert "resumed at step 10" in again.stderr and "trained steps 10..30" in again.stderr


def test_fresh_starts_a_new_run_and_run_dir_names_one(tiny, cli, tmp_path):
    run = Path(cli("train", tiny, "-q", "--stop-after", "10").stdout.strip())
    fresh = Path(cli("train", tiny, "-q", "--fresh", "--stop-after", "10").stdout.strip())
    assert fresh != run and fresh.parent == run.parent
    named = cli("train", tiny, "-q", "--run-dir", tmp_path / "mine", "--stop-after", "10")
    assert named.exit_code == 0 and Path(named.stdout.strip()) == tmp_path / "mine"


def test_run_dir_trained_with_another_recipe_is_refused(tiny, cli):
    run = cli("train", tiny, "-q", "--stop-after", "10").stdout.strip()
    res = cli("train", tiny, "-q", "--run-dir", run, "--set", "network.width=16")
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: {run}: its checkpoint was trained with a different recipe (differs in network.width); "
        "use --fresh for a new run")
