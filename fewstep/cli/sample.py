"""``fewstep sample RUN``: a PNG of samples at several step counts."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from fewstep.cli.common import DeviceOpt, RunArg, clean_errors, err, parse_steps
from fewstep.config.recipe import MAX_SEED


@clean_errors
def sample(
    run: RunArg,
    steps: Annotated[str, typer.Option("--steps", metavar="1,2,4,8", help="Step counts, one panel each.")] = "1,2,4,8",
    n: Annotated[int, typer.Option("--n", metavar="N", min=1, help="Samples per panel.")] = 2048,
    out: Annotated[Optional[str], typer.Option(
        "--out", metavar="FILE.png", help="Output PNG; default: RUN/samples/sample.png.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the initial noise.")] = 0,
    sampler: Annotated[Optional[str], typer.Option(
        "--sampler", metavar="NAME", help="Another registered sampler.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Sample a run's EMA weights at each step count and save a PNG grid.

    \b
    Example:
      fewstep sample runs/fm_toy --steps 1,2,4,8 --n 2048 --out samples.png
    """
    from fewstep.api import sample_run

    path = sample_run(run, parse_steps(steps), n=n, seed=seed, out=out, sampler=sampler, device=device)
    err(f"wrote {path}")
    print(path)
