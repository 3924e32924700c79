"""Checking a component under several processes (torchrun, gloo, CPU): the environment a test launches torchrun
from, and the comparison every multi-process test makes.

N processes and one process accumulating N shards take the same optimiser steps (``fewstep.run.dist``), so a
test runs both and compares their ``metrics.jsonl``::

    from fewstep.testing.distributed import assert_same_steps, torchrun_env
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "fewstep", "train", recipe, "--run-dir", two, "-q"], env=torchrun_env(), check=True)
    train_recipe(recipe, ["train.accumulate=2"], run_dir=one)
    assert_same_steps(two, one, [2, 4, 6])
"""
from __future__ import annotations

import os
from pathlib import Path

from fewstep.run.records import read_metrics

__all__ = ["TORCHRUN_VARS", "assert_same_steps", "torchrun_env"]

# what torchrun sets for its workers: a test process that has them would join a process group itself
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env(**extra: str) -> dict[str, str]:
    """This process's environment without torchrun's worker variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}, **extra}


def assert_same_steps(distributed: str | Path, accumulated: str | Path, steps: list[int]) -> None:
    """The records of a multi-process run equal those of one process accumulating its shards: logged at
    ``steps``, losses to 1e-6 and gradient norms to 1e-4 (relative; the sums run in another order), and the
    ranks' weight checksums equal at every record."""
    a, b = read_metrics(distributed), read_metrics(accumulated)
    assert [r["step"] for r in a] == [r["step"] for r in b] == steps, ([r["step"] for r in a], [r["step"] for r in b])
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-6 * abs(rb["loss"]), (ra["step"], ra["loss"], rb["loss"])
        assert abs(ra["grad_norm"] - rb["grad_norm"]) <= 1e-4 * rb["grad_norm"], (ra["step"], ra["grad_norm"],
                                                                                  rb["grad_norm"])
        sums = ra["rank_checksums"]
        assert len(sums) > 1 and len(set(sums)) == 1, (ra["step"], sums)  # equal weights on every rank
