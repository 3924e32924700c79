"""Image datasets in pixels: what they share, those held in memory, CIFAR-10, and the bundled 8x8 digits
that need no download (folders of images: :mod:`fewstep.data.folder`).

Pixels p in [0, 1] are standardised once with the set's global pixel mean m and std s:
``x = (p - m) / s * sigma_d``, so the network sees data with overall std sigma_d like every other
dataset, and :meth:`ImageDataset.to_uint8` inverts the map for metrics and PNG grids. Sampling is
with replacement from a ``torch.Generator``, the same contract as the 2D toys (``data/base.py``): a
resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fewstep.data.base import Batch
from fewstep.data.imagefiles import ImageItem

__all__ = ["ImageDataset", "PixelImages", "StoredPixels", "digits_pixels", "load_cifar10", "load_digits_dataset"]


class PixelImages:
    """What image data sets in pixels share: the normalisation with the set's pixel mean and std, and
    a batch from drawn images (flipped when ``xflip``; augmented by EDM's pipeline with probability
    ``augment``). ``conditional`` makes ``num_classes`` the label count, so the flow map gets class
    labels (and a null class for classifier-free guidance)."""

    kind = "images"

    def __init__(self, shape: tuple[int, ...], labels: torch.Tensor | None, mean: float, std: float, *,
                 sigma_d: float, conditional: bool, xflip: bool, augment: float, name: str) -> None:
        if conditional and labels is None:
            raise ValueError(f"{name}: conditional=True needs labels")
        if not std > 0:
            raise ValueError(f"{name}: all pixels are equal")
        self.name, self.sigma_d, self.xflip, self.augment = name, float(sigma_d), bool(xflip), float(augment)
        self.shape, self.mean, self.std = tuple(shape), float(mean), float(std)
        self.labels = None if labels is None else labels.to(torch.long)
        self.num_classes = int(self.labels.max()) + 1 if conditional else None

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> data space with overall std sigma_d."""
        return (pixels - self.mean) * (self.sigma_d / self.std)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Data space -> [0, 1] pixels (clamped)."""
        return (x.detach().float().cpu() * (self.std / self.sigma_d) + self.mean).clamp(0, 1)

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Data space -> uint8 images [n, C, H, W], what FID-style metrics and PNG grids take."""
        return (self.to_pixels(x) * 255).round().to(torch.uint8)

    def _batch(self, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        """Drawn images ``x`` [n, C, H, W] in [0, 1] (indices ``idx``) -> a Batch: flipped, augmented (in
        [-1, 1] as EDM does, with the 9 labels in ``Batch.augment``), normalised, with their labels."""
        n = x.shape[0]
        if self.xflip:
            flip = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        labels = None
        if self.augment > 0:
            from fewstep.data.augment import augment

            x, labels = augment(x * 2 - 1, self.augment, generator)
            x = (x + 1) / 2
        cond = self.labels[idx] if self.num_classes else None
        return Batch(self.normalise(x), cond, labels)


class ImageDataset(PixelImages):
    """Images ``pixels`` [N, C, H, W] held in memory: uint8 (0..255) or float in [0, 1]; optional integer
    ``labels`` [N]."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor | None = None, *, sigma_d: float = 0.5,
                 conditional: bool = False, xflip: bool = False, augment: float = 0.0, name: str = "images") -> None:
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be [N, C, H, W], got shape {tuple(pixels.shape)}")
        # uint8 pixels (0..255) stay uint8 in memory (CIFAR-10: 150 MB, not 600) and are scaled per batch
        self.pixels = pixels.contiguous() if pixels.dtype == torch.uint8 else pixels.to(torch.float32).contiguous()
        self._scale = 1 / 255 if pixels.dtype == torch.uint8 else 1.0
        mean, std = pixel_moments(self.pixels, self._scale)
        super().__init__(tuple(self.pixels.shape[1:]), labels, mean, std, sigma_d=sigma_d, conditional=conditional,
                         xflip=xflip, augment=augment, name=name)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def originals(self) -> StoredPixels:
        """The stored images one by one as uint8 (what ``fewstep encode`` feeds a VAE)."""
        return StoredPixels(self)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` images drawn uniformly with replacement (then flipped, augmented: :meth:`_batch`)."""
        idx = torch.randint(0, len(self), (n,), generator=generator)
        return self._batch(self.pixels[idx].to(torch.float32) * self._scale, idx, generator)

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, n={len(self)}, shape={self.shape}, classes={self.num_classes})"


class StoredPixels(torch.utils.data.Dataset):
    """An in-memory set's images as :class:`~fewstep.data.imagefiles.ImageItem` s (uint8, never unreadable)."""

    def __init__(self, ds: ImageDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> ImageItem:
        px = self.ds.pixels[i]
        u8 = px if px.dtype == torch.uint8 else (px * 255).round().to(torch.uint8)
        return ImageItem(i, u8, -1 if self.ds.labels is None else int(self.ds.labels[i]), "")

    def name(self, i: int) -> str:
        return f"{self.ds.name}[{i}]"


def pixel_moments(pixels: torch.Tensor, scale: float, chunk: int = 4096) -> tuple[float, float]:
    """Global mean and std of the pixels in [0, 1], in float64, a chunk of images at a time."""
    total, sq, n = 0.0, 0.0, pixels.numel()
    for i in range(0, pixels.shape[0], chunk):
        block = pixels[i:i + chunk].to(torch.float64) * scale
        total += float(block.sum())
        sq += float((block * block).sum())
    mean = total / n
    return mean, max(sq / n - mean * mean, 0.0) ** 0.5


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def load_cifar10(root: str = "data", split: str = "train", download: bool = True, sigma_d: float = 0.5,
                 conditional: bool = False, xflip: bool = True, augment: float = 0.0) -> ImageDataset:
    """CIFAR-10 (Krizhevsky 2009) through torchvision: 50k training or 10k test images, 3 x 32 x 32.

    Without the files and without a network, a ConfigError names the archive and where to put it.
    """
    from pathlib import Path

    from fewstep.errors import MissingResource

    try:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as exc:  # noqa: BLE001 - offline download, missing or corrupt files
        where = Path(root).resolve() / "cifar-10-batches-py"
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        why = (f"could not be downloaded ({type(exc).__name__}: {detail})"
               if download else "download is off")
        raise MissingResource(f"data: CIFAR-10 is not in {where} and {why}; fetch {CIFAR10_URL} and "
                          f"extract it into {Path(root).resolve()}, or set data.root to where it is") from None
    pixels = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, 32, 32]
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    return ImageDataset(pixels, labels, sigma_d=sigma_d, conditional=conditional, xflip=xflip, augment=augment,
                        name="cifar10")


def digits_pixels(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's bundled 1797 handwritten digits as [N, 1, size, size] pixels in [0, 1], and labels.

    The originals are 8x8 with values 0..16 (UCI optdigits test set, bundled with scikit-learn, so no
    download); larger sizes are bilinear upsamplings, for backbones that want 16 or 32 pixels.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return pixels, torch.as_tensor(d.target, dtype=torch.long)


def load_digits_dataset(size: int = 8, sigma_d: float = 0.5, conditional: bool = False,
                        xflip: bool = False, augment: float = 0.0) -> ImageDataset:
    pixels, labels = digits_pixels(size)
    return ImageDataset(pixels, labels, sigma_d=sigma_d, conditional=conditional, xflip=xflip, augment=augment,
                        name="digits")
