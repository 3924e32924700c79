"""``fewstep import-checkpoint FILE --out DIR``: a released IMM checkpoint as a fewstep run."""
from __future__ import annotations

from typing import Annotated

import typer

from fewstep.cli.common import SetOpt, clean_errors, err


@clean_errors
def import_checkpoint(
    checkpoint: Annotated[str, typer.Argument(
        metavar="FILE", help="A released IMM checkpoint (lumaai/imm: cifar10.pt, imagenet256_ts_a2.pkl, "
                             "imagenet256_s_a1.pkl) or another EDM persistence pickle of an IMMPrecond.")],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="The run directory to create.")],
    set_: SetOpt = None,
) -> None:
    """Turn a released IMM checkpoint into a fewstep run (weights as safetensors, a recipe with its network,
    parameterisation, second time input and sampler) that eval, sample and train.init use.

    The pickle is read without running any of its code (only tensors, containers and module records);
    anything else is refused. Latent (ImageNet) checkpoints need the encoded latents:
    --set data.root=DIR (a folder written by fewstep encode).

    \b
    Examples:
      fewstep import-checkpoint cifar10.pt --out runs/imported/imm_cifar10
      fewstep import-checkpoint imagenet256_ts_a2.pkl --out runs/imported/imm_in256 \\
          --set data.root=data/imagenet256-latents
    """
    from fewstep.run.released import import_checkpoint as run_import

    run = run_import(checkpoint, out, set_ or [])
    err(f"imported {checkpoint} -> {run} (fewstep eval {run}; fewstep sample {run})")
    print(run)
