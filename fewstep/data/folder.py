"""A folder (or list file) of images as a data set: decoded once and held in memory, or streamed from
disk at every batch for sets that do not fit (ImageNet: 1.28M images, 252 GB as uint8 at 256 x 256).

Both read files through :mod:`fewstep.data.imagefiles` (ADM's centre crop; an unreadable image is
skipped with a warning, never fatal) and sample with replacement from a ``torch.Generator``, so a
resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import sys

import torch

from fewstep.data.base import Batch
from fewstep.data.imagefiles import ImageFiles, decode, list_images, skipped_message
from fewstep.data.images import ImageDataset, PixelImages, pixel_moments
from fewstep.errors import ConfigError

__all__ = ["MOMENT_IMAGES", "StreamedImages", "load_image_folder"]

MOMENT_IMAGES = 1024  # images, evenly spaced through the list, that a streamed set's pixel mean and std come from


def warn(message: str) -> None:
    print(f"fewstep: warning: {message}", file=sys.stderr)


def load_image_folder(root: str, size: int, sigma_d: float = 0.5, conditional: bool = False, xflip: bool = False,
                      channels: int = 3, augment: float = 0.0, stream: bool = False) -> PixelImages:
    """The images of ``root`` (:func:`~fewstep.data.imagefiles.list_images`: class subfolders or a list
    file give labels), each ADM-centre-cropped to ``size``; held in memory as uint8, or read from disk
    at every batch when ``stream``."""
    images = list_images(root)
    if conditional and images.labels is None:
        raise ConfigError(f"data.conditional: {root} has no class subfolders (or list-file labels) to take "
                          "labels from")
    files = ImageFiles(images, size, channels)
    name = f"folder:{images.root.name}"
    if stream:
        return StreamedImages(files, sigma_d=sigma_d, conditional=conditional, xflip=xflip, augment=augment,
                              name=name)
    n = len(files)
    out = torch.empty(n, channels, size, size, dtype=torch.uint8)
    keep, skipped = [], []
    for start in range(0, n, 1024):
        for item in decode(files, range(start, min(n, start + 1024))):
            if item.error:
                skipped.append((files.name(item.index), item.error))
            else:
                out[item.index] = item.image
                keep.append(item.index)
    if not keep:
        raise ConfigError(skipped_message(f"data.root {root}", skipped, n) + "; nothing left to train on")
    labels = None if images.labels is None else torch.tensor(images.labels, dtype=torch.long)
    if skipped:
        warn(skipped_message(f"data.root {root}", skipped, n))
        out, labels = out[keep], None if labels is None else labels[keep]
    return ImageDataset(out, labels, sigma_d=sigma_d, conditional=conditional, xflip=xflip, augment=augment,
                        name=name)


class StreamedImages(PixelImages):
    """Images decoded from disk at every batch by a pool of threads. The pixel mean and std of the
    normalisation come from up to :data:`MOMENT_IMAGES` images evenly spaced through the list (an
    estimate, and no RNG). An index whose file cannot be read is replaced by the next readable one
    (label included), with a warning the first time."""

    def __init__(self, files: ImageFiles, *, sigma_d: float = 0.5, conditional: bool = False, xflip: bool = False,
                 augment: float = 0.0, name: str = "images") -> None:
        self.files = files
        self._bad: dict[int, str] = {}
        n = len(files)
        picks = torch.linspace(0, n - 1, min(n, MOMENT_IMAGES)).round().long().unique().tolist()
        good = [it.image for it in decode(files, picks) if not it.error]
        if not good:
            raise ConfigError(f"data.root {files.images.root}: none of {len(picks)} images spread over the set "
                              "could be read")
        mean, std = pixel_moments(torch.stack(good), 1 / 255)
        labels = None if files.images.labels is None else torch.tensor(files.images.labels, dtype=torch.long)
        super().__init__((files.channels, files.size, files.size), labels, mean, std, sigma_d=sigma_d,
                         conditional=conditional, xflip=xflip, augment=augment, name=name)

    def __len__(self) -> int:
        return len(self.files)

    def originals(self) -> ImageFiles:
        """The files one by one (what ``fewstep encode`` feeds a VAE, in DataLoader workers)."""
        return self.files

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` images drawn uniformly with replacement, read from disk (then flipped, augmented)."""
        idx = torch.randint(0, len(self), (n,), generator=generator)
        items = decode(self.files, idx.tolist())
        images, used = [], []
        for item in items:
            j, tries = item.index, 0
            while item.error:
                if j not in self._bad:
                    self._bad[j] = item.error
                    warn(f"data.root: {self.files.name(j)} cannot be read ({item.error}); batches use the next "
                         "image in its place")
                j, tries = (j + 1) % len(self), tries + 1
                if tries >= len(self):
                    raise ConfigError(f"data.root {self.files.images.root}: no image can be read")
                item = self.files[j]
            images.append(item.image)
            used.append(j)
        x = torch.stack(images).to(torch.float32) * (1 / 255)  # as ImageDataset scales, to the last bit
        return self._batch(x, torch.tensor(used, dtype=torch.long), generator)

    def __repr__(self) -> str:
        return f"StreamedImages({self.name!r}, n={len(self)}, shape={self.shape}, classes={self.num_classes})"
