"""``fewstep encode``: pre-encode an image dataset with a diffusers AutoencoderKL (for latent recipes),
in shards, resumable, across processes under torchrun."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fewstep.cli.common import DeviceOpt, SetOpt, clean_errors, err


@clean_errors
def encode(
    data: Annotated[str, typer.Option(
        "--data", metavar="NAME", help="A registered image dataset (image_folder, cifar10, digits, ...).")],
    vae: Annotated[str, typer.Option(
        "--vae", metavar="ID|DIR", help="AutoencoderKL: a hub id (stabilityai/sd-vae-ft-ema) or a local folder.")],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Folder for the shards and meta.json.")],
    set_: SetOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per VAE call.")] = 64,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="DataLoader processes that decode and crop images, per process; default: "
                                 "min(4, CPU cores), 0 = in the encoding process.")] = None,
    shard_size: Annotated[int, typer.Option(
        "--shard-size", min=1, help="Images per shard: a killed encode loses at most the shards in flight.")] = 10_000,
    xflip: Annotated[bool, typer.Option(
        "--xflip", help="Also store the encodings of the x-flipped images (data.xflip then draws them).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Store every image's posterior mean and std, its label and the channel statistics.

    Example: fewstep encode --data image_folder --set data.root=/data/imagenet/train --set data.size=256
    --vae stabilityai/sd-vae-ft-ema --out data/imagenet256-latents
    (under torchrun --nproc_per_node=8 -m fewstep encode ... each GPU encodes every 8th shard). Run the
    same command again after an interruption: complete shards are kept. Then train on it with
    data: {name: latents, root: data/imagenet256-latents}.
    """
    from pydantic import ValidationError

    from fewstep.config.source import parse_scalar
    from fewstep.data.encode import encode_source, summary
    from fewstep.data.vae import load_vae
    from fewstep.errors import ConfigError, RecipeError
    from fewstep.plugins import get_registries
    from fewstep.protocols import StoredImages
    from fewstep.run.components import resolve_device
    from fewstep.run.dist import from_env
    from fewstep.validation import error_message

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the shards and meta.json")
    spec = {"name": data}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("data."):
            raise ConfigError(f"--set {item}: encode takes data.<field>=value")
        spec[key[5:]] = parse_scalar(raw, f"--set {item}")
    entry = get_registries().datasets.get(data)
    model = entry.model()
    if "stream" in model.model_fields:  # a folder is read image by image, never held in memory for an encode
        spec.setdefault("stream", True)
    try:
        cfg = model.model_validate(spec)
    except ValidationError as exc:  # one line per problem, named by its flag
        raise RecipeError([f"--set data.{'.'.join(map(str, e['loc']))}: {error_message(e)}" if e["loc"] else
                           f"--data {data}: {error_message(e)}" for e in exc.errors(include_url=False)]) from None
    if workers is None:
        import os

        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    dist = from_env()
    try:
        ds = entry.build(cfg, 0.5)
        if not isinstance(ds, StoredImages):
            raise ConfigError(f"--data {data}: has no original images to encode (kind {ds.kind})")
        model_vae = load_vae(vae, resolve_device(dist.device(device) or "auto"))
        labels = ds.labels
        plan = {"source": f"{data} {cfg.model_dump(exclude={'name', 'stream'})}", "vae": vae,
                "image_shape": list(ds.shape), "labels": labels is not None,
                "classes": None if labels is None else int(labels.max()) + 1}
        label = f"encode {data}" + (f" (rank 0 of {dist.world})" if dist.world > 1 else "")
        bar = _Bar(label, enabled=not quiet and dist.main)
        result = encode_source(ds.originals(), model_vae, out, plan=plan, shard_size=shard_size, batch_size=batch,
                               workers=workers, xflip=xflip, dist=dist, progress=bar)
        bar.close()
        if dist.main:
            for line in summary(result, result.meta):
                err(line)
            print(result.folder)
    finally:
        dist.shutdown()


class _Bar:
    """The encode's progress: a rich bar with images/s and the time left on a terminal, otherwise a plain
    line every 30 s (and at the end)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar, self.last = label, enabled, None, 0.0

    def __call__(self, done: int, total: int, rate: float) -> None:
        import sys
        import time

        from fewstep.train.progress import Progress

        if not self.enabled:
            return
        if self.bar is None:
            self.bar = Progress(total, 0, self.label)
        now = time.monotonic()
        if sys.stderr.isatty() or now - self.last >= 30 or done == total:
            self.last = now
            self.bar.status(done, {"images/s": rate})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
