"""``fewstep train RECIPE``: train (or resume) a recipe."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from fewstep.cli.common import DeviceOpt, RecipeArg, SetOpt, clean_errors, err


@clean_errors
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: Annotated[Optional[str], typer.Option(
        "--run-dir", metavar="DIR", help="Train (or resume) in this run directory.")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start a new run even if an unfinished one can be resumed.")] = False,
    device: DeviceOpt = None,
    stop_after: Annotated[Optional[int], typer.Option(
        "--stop-after", metavar="N", min=1, help="Stop this session after N steps (resumable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a recipe; resumes its newest unfinished run from the latest checkpoint.

    Example: fewstep train recipes/fm_toy.yaml --set train.steps=2000
    Several processes: torchrun --nproc_per_node=8 -m fewstep train recipes/imm_cifar.yaml
    """
    from fewstep.api import train_recipe

    result = train_recipe(recipe, set_ or [], run_dir=run_dir, fresh=fresh, device=device,
                          progress=not quiet, stop_after=stop_after, log=err)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    if result.start_step:
        err(f"resumed at step {result.start_step}")
    err(f"trained steps {result.start_step}..{result.end_step} in {result.seconds:.1f}s -> {result.run_dir}")
    print(result.run_dir)
