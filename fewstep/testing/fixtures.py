"""Small data made on the spot, for tests and the conformance kit: nothing is downloaded.

- :func:`tiny_vae`: a randomly initialised diffusers ``AutoencoderKL`` (4 latent channels, factor 2),
  saved as a local folder that ``data.vae`` / ``fewstep encode --vae`` accept;
- :func:`image_folder`: a folder of PNGs in class subfolders (what the ``image_folder`` dataset reads);
- :func:`encoded_latents`: sklearn's bundled digits encoded by :func:`tiny_vae` (what ``latents`` reads).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["encoded_latents", "image_folder", "tiny_vae"]


def tiny_vae(folder: str | Path) -> Path:
    """A randomly initialised AutoencoderKL (3 -> 4 channels, spatial factor 2, ~20k parameters) saved in
    ``folder`` with ``save_pretrained``; returns the folder."""
    import torch
    from diffusers import AutoencoderKL

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16)
    vae.save_pretrained(folder)
    return folder


def image_folder(folder: str | Path, classes: int = 2, per_class: int = 4, size: tuple[int, int] = (14, 10)
                 ) -> Path:
    """``classes`` subfolders of ``per_class`` seeded RGB PNGs of ``size`` (w, h: not square, so the
    dataset's resize and centre crop do something); returns the folder."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.png")
    return folder


def encoded_latents(folder: str | Path, n: int = 32) -> Path:
    """The first ``n`` of sklearn's digits at 16 x 16, encoded by :func:`tiny_vae` (stored in
    ``folder/vae``) with their labels, in ``folder/latents``; returns that folder."""
    import torch

    from fewstep.data.images import digits_pixels
    from fewstep.data.latents import encode_images, load_vae, write_latents

    folder = Path(folder)
    vae_dir = tiny_vae(folder / "vae")
    pixels, labels = digits_pixels(16)
    images = (pixels[:n] * 255).round().to(torch.uint8)
    mean, std = encode_images(load_vae(str(vae_dir)), images)
    return write_latents(folder / "latents", mean, std, labels[:n], str(vae_dir), tuple(images.shape[1:]),
                         "digits (fewstep.testing.fixtures)")
