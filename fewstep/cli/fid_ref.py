"""``fewstep fid-ref``: the feature statistics of a reference image set, once, for the ``fid`` metric."""
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
def fid_ref(
    images: Annotated[Optional[str], typer.Argument(
        metavar="[IMAGES]", help="A folder of images (searched recursively) or a list file; or use --data.")] = None,
    out: Annotated[str, typer.Option("--out", metavar="FILE.npz", help="Where the statistics go (mu, sigma).")] = "",
    size: Annotated[Optional[int], typer.Option(
        "--size", min=4, help="With IMAGES: ADM's centre crop to this side (256 for ImageNet-256).")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", metavar="NAME", help="A registered image dataset instead of IMAGES (cifar10, digits, ...).")] = None,
    set_: DataSetOpt = None,
    features: Annotated[str, typer.Option(
        "--features", metavar="inception|digits",
        help="inception (FID: torch-fidelity's TF-FID Inception) or digits (FD-digits).")] = "inception",
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="FILE", help="The feature extractor's weights (Inception: default places).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per feature-extractor call.")] = 128,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="DataLoader processes that decode images; default min(4, CPU cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Compute the mean and covariance of the reference set's features once; the fid metric then takes
    reference: FILE.npz and never reads the reference images again.

    Under torchrun each process reads every world-th image.

    \b
    Examples:
      fewstep fid-ref /data/imagenet/train --size 256 --out refs/imagenet256.npz
      fewstep fid-ref --data cifar10 --out refs/cifar10.npz
    """
    from fewstep.errors import ConfigError
    from fewstep.eval.fidref import reference_statistics, save_reference
    from fewstep.run.dist import from_env

    if not out.endswith(".npz"):
        raise ConfigError(f"--out {out or '(missing)'}: give a file name ending in .npz")
    if Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .npz")
    if (images is None) == (data is None):
        raise ConfigError("give IMAGES (a folder or list file) or --data NAME, one of the two")
    if images is not None:
        if size is None:
            raise ConfigError(f"--size: needed with IMAGES {images} (the side of ADM's centre crop, e.g. 256)")
        if set_:
            raise ConfigError("--set: goes with --data, not with IMAGES")
        data, set_ = "image_folder", [f"data.root={images}", f"data.size={size}"]
    ds, cfg = image_source_from_flags(data, set_)
    dist = from_env()
    try:
        label = f"fid-ref {features}" + (f" (rank 0 of {dist.world})" if dist.world > 1 else "")
        bar = ProgressBar(label, enabled=not quiet and dist.main)
        mu, sigma, n, skipped = reference_statistics(
            ds.originals(), features=features, weights=weights, batch_size=batch,
            workers=default_workers() if workers is None else workers, device=dist.device(device) or "auto",
            dist=dist, progress=bar)
        bar.close()
        if dist.main:
            source = f"{data} {cfg.model_dump(exclude={'name', 'stream'})}"
            save_reference(out, mu, sigma, features=features, source=source, n=n)
            err(f"{features} statistics of {n} images ({mu.size} features) from {source} -> {out}")
            if skipped:
                err(f"skipped {len(skipped)} unreadable images on rank 0: "
                    + "; ".join(f"{name} ({why})" for name, why in skipped[:5]))
            print(out)
    finally:
        dist.shutdown()
