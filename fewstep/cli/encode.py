"""``fewstep encode``: pre-encode an image dataset with a diffusers AutoencoderKL (for latent recipes)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fewstep.cli.common import DeviceOpt, SetOpt, clean_errors, err


@clean_errors
def encode(
    data: Annotated[str, typer.Option(
        "--data", metavar="NAME", help="A registered image dataset (cifar10, digits, ...).")],
    vae: Annotated[str, typer.Option(
        "--vae", metavar="ID|DIR", help="AutoencoderKL: a hub id (stabilityai/sd-vae-ft-ema) or a local folder.")],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Folder for latents.safetensors and meta.json.")],
    set_: SetOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per VAE call.")] = 64,
    device: DeviceOpt = None,
) -> None:
    """Store every image's posterior mean and std, its label and the channel statistics.

    Example: fewstep encode --data cifar10 --set data.root=data --vae stabilityai/sd-vae-ft-ema
    --out data/cifar10-latents
    Then train on it with data: {name: latents, root: data/cifar10-latents}.
    """
    from pydantic import ValidationError

    from fewstep.config.source import parse_scalar
    from fewstep.data.latents import encode_images, load_vae, write_latents
    from fewstep.errors import ConfigError, RecipeError
    from fewstep.plugins import get_registries
    from fewstep.protocols import StoredImages
    from fewstep.run.components import resolve_device
    from fewstep.train.progress import Progress
    from fewstep.validation import error_message

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for latents.safetensors and meta.json")
    spec = {"name": data}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("data."):
            raise ConfigError(f"--set {item}: encode takes data.<field>=value")
        spec[key[5:]] = parse_scalar(raw, f"--set {item}")
    entry = get_registries().datasets.get(data)
    try:
        cfg = entry.model().model_validate(spec)
    except ValidationError as exc:  # one line per problem, named by its flag
        raise RecipeError([f"--set data.{'.'.join(map(str, e['loc']))}: {error_message(e)}" if e["loc"] else
                           f"--data {data}: {error_message(e)}" for e in exc.errors(include_url=False)]) from None
    ds = entry.build(cfg, 0.5)
    if not isinstance(ds, StoredImages):
        raise ConfigError(f"--data {data}: not an image dataset held in memory (kind {ds.kind})")
    model = load_vae(vae, resolve_device(device or "auto"))
    images = ds.originals(0, len(ds))
    bar = Progress(len(ds), 0, f"encode {data}")
    mean, std = encode_images(model, images, batch, progress=bar.advance)
    bar.close()
    folder = write_latents(out, mean, std, ds.labels, vae, tuple(images.shape[1:]), f"{data} {cfg.model_dump()}")
    err(f"encoded {len(ds)} images {tuple(images.shape[1:])} -> latents {tuple(mean.shape[1:])} in {folder}")
    print(folder)
