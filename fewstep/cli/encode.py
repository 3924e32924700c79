"""``fewstep encode``: pre-encode an image dataset with a diffusers AutoencoderKL (for latent recipes),
in shards, resumable, across processes under torchrun."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fewstep.cli.common import (
    DataSetOpt,
    DeviceOpt,
    ProgressBar,
    clean_errors,
    default_workers,
    err,
    image_source_from_flags,
)


@clean_errors
def encode(
    data: Annotated[str, typer.Option(
        "--data", metavar="NAME", help="A registered image dataset (image_folder, cifar10, digits, ...).")],
    vae: Annotated[str, typer.Option(
        "--vae", metavar="ID|DIR", help="AutoencoderKL: a hub id (stabilityai/sd-vae-ft-ema) or a local folder.")],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Folder for the shards and meta.json.")],
    set_: DataSetOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per VAE call.")] = 64,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="DataLoader processes that decode and crop images, per process; default: "
                                 "min(4, CPU cores), 0 = in the encoding process.")] = None,
    shard_size: Annotated[int, typer.Option(
        "--shard-size", min=1, help="Images per shard: a killed encode loses at most the shards in flight.")] = 10_000,
    xflip: Annotated[bool, typer.Option(
        "--xflip", help="Also store the encodings of the x-flipped images (data.xflip then draws them).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Delete an earlier encode in --out (its plan, shards and meta.json) and encode again; "
                        "without it the same command resumes, and other settings are refused.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Store every image's posterior mean and std, its label and the channel statistics.

    Under torchrun each process encodes every world-th shard. Run the same command again after an
    interruption: complete shards are kept. Then train on it with data: {name: latents, root: DIR}.

    \b
    Examples:
      fewstep encode --data cifar10 --vae stabilityai/sd-vae-ft-ema --out data/cifar10-latents
      torchrun --nproc_per_node=8 -m fewstep encode --data image_folder \\
          --set data.root=/data/imagenet/train --set data.size=256 --set data.conditional=true \\
          --vae stabilityai/sd-vae-ft-ema --out data/imagenet256-latents
    """
    from fewstep.data.encode import encode_source, summary
    from fewstep.data.vae import load_vae
    from fewstep.errors import ConfigError
    from fewstep.run.components import resolve_device
    from fewstep.run.dist import from_env

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the shards and meta.json")
    ds, cfg = image_source_from_flags(data, set_)
    dist = from_env()
    try:
        model_vae = load_vae(vae, resolve_device(dist.device(device) or "auto"))
        labels = ds.labels
        plan = {"source": f"{data} {cfg.model_dump(exclude={'name', 'stream'})}", "vae": vae,
                "image_shape": list(ds.shape), "labels": labels is not None,
                "classes": None if labels is None else int(labels.max()) + 1}
        label = f"encode {data}" + (f" (rank 0 of {dist.world})" if dist.world > 1 else "")
        bar = ProgressBar(label, enabled=not quiet and dist.main)
        result = encode_source(ds.originals(), model_vae, out, plan=plan, shard_size=shard_size, batch_size=batch,
                               workers=default_workers() if workers is None else workers, xflip=xflip, dist=dist,
                               force=force, progress=lambda done, total, rate: bar(done, total, **{"images/s": rate}))
        bar.close()
        if dist.main:
            for line in summary(result, result.meta):
                err(line)
            print(result.folder)
    finally:
        dist.shutdown()

