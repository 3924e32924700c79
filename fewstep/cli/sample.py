"""``fewstep sample RUN``: a PNG of samples at several step counts, and the samples themselves if asked."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from fewstep.cli.common import (
    AfterSetOpt,
    CheckpointOpt,
    DeviceOpt,
    RunArg,
    WeightsOpt,
    clean_errors,
    err,
    parse_steps,
)
from fewstep.config.recipe import MAX_SEED


def _seed(value: int) -> int:
    if value > MAX_SEED:
        raise typer.BadParameter(f"{value} is above 2^62")
    return value


@clean_errors
def sample(
    run: RunArg,
    steps: Annotated[str, typer.Option("--steps", metavar="1,2,4,8", help="Step counts, one panel each.")] = "1,2,4,8",
    n: Annotated[int, typer.Option(
        "--n", metavar="N", min=1, help="Samples per step count: 2D points are all drawn; images show up to 256 per "
                                        "panel (all of them go to --save-npz / --save-png).")] = 2048,
    out: Annotated[Optional[str], typer.Option(
        "--out", metavar="FILE.png", help="Output PNG; default: RUN/samples/sample_step_<checkpoint>.png.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite the PNG if it exists (otherwise a free name beside it: -2, -3, ...).")] = False,
    save_npz: Annotated[Optional[str], typer.Option(
        "--save-npz", metavar="FILE.npz", help="Also save the samples: one array per step count, steps_<k> (images "
                                               "as uint8 [n, H, W, C], ADM's layout; points as float32).")] = None,
    save_png: Annotated[Optional[str], typer.Option(
        "--save-png", metavar="DIR", help="Also save every image as DIR/<steps>step/<index>.png (image data).")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", metavar="SEED", min=0, callback=_seed, help="Seed of the initial noise, 0 to 2^62.")] = 0,
    sampler: Annotated[Optional[str], typer.Option(
        "--sampler", metavar="NAME", help="Another registered sampler.")] = None,
    set_: AfterSetOpt = None,
    checkpoint: CheckpointOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Sample a run (its EMA weights unless --weights online) at each step count and save a PNG grid.

    \b
    Examples:
      fewstep sample runs/fm_toy --steps 1,2,4,8 --n 2048 --out samples.png
      fewstep sample runs/imm_digits --steps 1,2 --n 1000 --save-npz digits.npz --save-png digits/
    """
    from fewstep.api import sample_run, save_samples

    path = sample_run(run, parse_steps(steps), n=n, seed=seed, out=out, sampler=sampler, device=device,
                      checkpoint=checkpoint, weights=weights, overrides=set_ or [], force=force)
    err(f"wrote {path}")
    if save_npz or save_png:
        for line in save_samples(run, parse_steps(steps), n=n, seed=seed, npz=save_npz, png_dir=save_png,
                                 sampler=sampler, device=device, checkpoint=checkpoint, weights=weights,
                                 overrides=set_ or []):
            err(line)
    print(path)
