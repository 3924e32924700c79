"""Pre-encoded latents of a VAE as a data set (IMM App. I.1, docs/imm.md §6 "Latents").

``fewstep encode`` (:mod:`fewstep.data.encode`) stores every image's posterior mean and std (float16)
with its label in shards, and ``meta.json`` with the per-channel mean and std of the latents
``mean + std e`` that training draws. Training draws ``mean + std e`` each time a latent is used and
normalises it per channel: ``(z - mu_c) / sigma_c * sigma_d`` (IMM uses its own ImageNet-256
statistics for sd-vae-ft-ema, given in the recipe; by default the stored ones). The shards are read
memory-mapped (:class:`~fewstep.data.latentfiles.LatentFiles`), so the processes of a node share one
page cache and each holds only the rows of its batches. Samples are decoded back to images for
metrics and grids with the same VAE.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fewstep.data.base import Batch
from fewstep.data.latentfiles import META, LatentFiles, write_latents
from fewstep.data.vae import decode_uint8, encode_images, load_vae
from fewstep.errors import ConfigError

__all__ = ["LatentDataset", "encode_images", "load_vae", "write_latents"]


class LatentDataset:
    """A folder written by ``fewstep encode`` (or :func:`write_latents`), sampled as normalised latents
    [C, h, w]. ``xflip`` draws the stored x-flipped encodings for half the samples (``encode --xflip``)."""

    kind = "images"  # metrics and grids see decoded images (to_uint8 runs the VAE's decoder)
    reference_note = ("the VAE's reconstructions (decoded latents), not the original images; for those, give a "
                      "metric reference: statistics from `fewstep fid-ref IMAGES`")

    def __init__(self, root: str | Path, sigma_d: float = 0.5, channel_mean=None, channel_std=None,
                 conditional: bool = False, vae: str | None = None, xflip: bool = False):
        root = Path(root)
        self.files = LatentFiles(root)
        self.meta = json.loads((root / META).read_text())
        self.labels = self.files.labels
        if conditional and self.labels is None:
            raise ConfigError(f"data.conditional: {root} was encoded without labels")
        if xflip and "mean_flip" not in self.files:
            raise ConfigError(f"data.xflip: {root} holds no x-flipped encodings; encode with `fewstep encode --xflip`")
        self.num_classes = int(self.labels.max()) + 1 if conditional else None
        self.shape = self.files.shape
        self.sigma_d, self.xflip = float(sigma_d), bool(xflip)
        c = self.shape[0]
        mu = torch.tensor(channel_mean if channel_mean is not None else self.meta["channel_mean"], dtype=torch.float32)
        sd = torch.tensor(channel_std if channel_std is not None else self.meta["channel_std"], dtype=torch.float32)
        if mu.numel() != c or sd.numel() != c:
            raise ConfigError(f"data.channel_mean/channel_std need {c} values (the latents have {c} channels)")
        self.mu, self.sd = mu.view(1, c, 1, 1), sd.view(1, c, 1, 1)
        self.vae_name = vae or self.meta["vae"]
        self._vae = None

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``mean + std e`` of n stored latents (with replacement; the x-flipped encoding for the draws
        with u < 1/2 when ``xflip``), normalised per channel to sigma_d."""
        idx = torch.randint(0, len(self), (n,), generator=generator)
        rows = idx.numpy()
        mean, std = self.files.rows("mean", rows), self.files.rows("std", rows)
        if self.xflip:
            flip = torch.rand(n, generator=generator) < 0.5
            if flip.any():
                mean[flip] = self.files.rows("mean_flip", rows[flip.numpy()])
                std[flip] = self.files.rows("std_flip", rows[flip.numpy()])
        z = mean.float() + std.float() * torch.randn(n, *self.shape, generator=generator)
        x = (z - self.mu) / self.sd * self.sigma_d
        return Batch(x, self.labels[idx] if self.num_classes else None)

    def to_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised data space -> the VAE's latent space."""
        return x.detach().float().cpu() / self.sigma_d * self.sd + self.mu

    def to_uint8(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Decode with the VAE to uint8 images [n, 3, H, W]."""
        if self._vae is None:
            self._vae = load_vae(self.vae_name)
        return decode_uint8(self._vae, self.to_latents(x), batch_size)
