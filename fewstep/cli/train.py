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

    Ctrl-C (or SIGTERM) finishes the step, writes a checkpoint and prints the command that resumes.

    \b
    Examples:
      fewstep train recipes/fm_toy.yaml --set train.steps=2000
      fewstep train recipes/fm_toy.yaml --fresh          # a new run beside the unfinished one
      torchrun --nproc_per_node=8 -m fewstep train recipes/imm_cifar.yaml
    """
    from fewstep.api import train_recipe
    from fewstep.errors import TrainingInterrupted

    main = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    try:
        result = train_recipe(recipe, set_ or [], run_dir=run_dir, fresh=fresh, device=device,
                              progress=not quiet, stop_after=stop_after, log=err if main else None)
    except TrainingInterrupted as exc:
        if not main:
            raise typer.Exit(exc.exit_code) from None
        exc.resume = resume_command(recipe, set_ or [], exc.run_dir)
        raise
    if not main:
        return
    err(f"trained steps {result.start_step}..{result.end_step} in {result.seconds:.1f}s -> {result.run_dir}")
    print(result.run_dir)


def resume_command(recipe: str, overrides: list[str], run_dir) -> str:
    """The command that continues ``run_dir``: this one, with ``--run-dir`` (under torchrun, as torchrun)."""
    import shlex

    world = int(os.environ.get("WORLD_SIZE", "1"))
    head = ["torchrun", "--standalone", f"--nproc_per_node={world}", "-m", "fewstep"] if world > 1 else ["fewstep"]
    args = [*head, "train", recipe, *[a for item in overrides for a in ("--set", item)], "--run-dir", str(run_dir)]
    return shlex.join(args)
