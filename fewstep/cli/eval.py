"""``fewstep eval RUN``: metrics at 1, 2, 4, 8 steps, with the data-vs-data floor."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from fewstep.cli.common import AfterSetOpt, CheckpointOpt, DeviceOpt, RunArg, WeightsOpt, clean_errors, parse_steps


@clean_errors
def evaluate(
    run: RunArg,
    steps: Annotated[Optional[str], typer.Option(
        "--steps", metavar="1,2,4,8", help="Step counts; default: the recipe's eval.steps.")] = None,
    n: Annotated[Optional[int], typer.Option(
        "--n", "--samples", metavar="N", min=2,
        help="Samples per step count; default: eval.n_samples (under torchrun write --samples: torchrun takes --n "
             "for its own --nnodes).")] = None,
    sampler: Annotated[Optional[str], typer.Option(
        "--sampler", metavar="NAME",
        help="Another registered sampler (pushforward, restart, euler, heun, ...).")] = None,
    set_: AfterSetOpt = None,
    checkpoint: CheckpointOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print eval.json on stdout instead of a table.")] = False,
) -> None:
    """Evaluate a run's EMA weights; writes eval.json in the run and prints a table.

    \b
    Examples:
      fewstep eval runs/fm_toy --steps 1,2,4,8
      fewstep eval runs/imm_toy --set sampler.schedule=uniform --checkpoint 2000 --weights online
      torchrun --standalone --nproc_per_node=8 -m fewstep eval runs/imm_cifar --samples 50000
    """
    from fewstep.api import evaluate_run

    out = evaluate_run(run, steps=parse_steps(steps) if steps else None, n=n, sampler=sampler, device=device,
                       checkpoint=checkpoint, weights=weights, overrides=set_ or [])
    if out is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    if as_json:
        print(json.dumps(out, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    names = list(out["floor"])
    table = Table(title=f"{out['run']} (step {out['checkpoint_step']}, {out['weights']} weights, "
                        f"{out['sampler']}/{out['schedule']}, n={out['n_samples']})")
    for col in ["steps", "NFE", *names, "seconds"]:
        table.add_column(col, justify="right")
    for row in out["rows"]:
        label = f"{row['steps']} (reference)" if row["steps"] == out["reference_steps"] else str(row["steps"])
        table.add_row(label, str(row["nfe"]), *(f"{row[k]:.4g}" for k in names), f"{row['seconds']:.2f}")
    table.add_row("data floor", "-", *(f"{out['floor'][k]:.4g}" for k in names), "-")
    Console().print(table)
    if not out["data_reference"].startswith("fresh samples"):
        Console(stderr=True).print(f"metrics against data compare with {out['data_reference']}")
    Console(stderr=True).print(f"wrote {out['run']}/eval.json")
