"""Images on disk, read one at a time: which files (a folder tree, a flat folder or a list file), ADM's
centre crop, and a map-style torch Dataset that DataLoader workers decode in.

The crop is ADM's (Dhariwal & Nichol 2021, ``center_crop_arr``), with which DiT and IMM prepare
ImageNet: while the short side is at least twice the target, halve the image with a box filter; then
resize bicubically so that the short side is the target; then cut out the centre. An image that cannot
be read is skipped and counted (:class:`ImageFiles` marks it), never fatal: ImageNet has a few.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from fewstep.errors import ConfigError, MissingResource

__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "ImageItem", "ImageList", "center_crop", "list_images", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class ImageList:
    """The images of a source in a fixed order, with integer labels (None: a flat folder, or a list file
    without labels) and the class names the labels index."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)


def list_images(root: str | Path) -> ImageList:
    """The images under ``root``, sorted by path.

    - a folder with class subfolders (ImageNet's ``train/n01440764/...``): the labels index the sorted
      subfolder paths, as torchvision's ImageFolder does;
    - a flat folder: no labels;
    - a list file (``.txt``, ``.lst``, ``.list``): one image per line, relative to the file's folder,
      optionally followed by an integer label (on every line or on none); blank lines and ``#`` lines
      are skipped.
    """
    base = Path(root)
    if base.is_file() and base.suffix.lower() in LIST_SUFFIXES:
        return _from_list_file(base)
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
        if base.is_dir() else []
    if not files:
        raise MissingResource(f"data.root: no images ({', '.join(IMAGE_SUFFIXES)}) under {base.resolve()}, and it "
                              f"is not a list file ({', '.join(LIST_SUFFIXES)})")
    folders = [p.parent.relative_to(base).as_posix() for p in files]
    classes = sorted(set(folders))
    if classes == ["."]:
        return ImageList(base, tuple(files), None, ())
    index = {c: i for i, c in enumerate(classes)}
    return ImageList(base, tuple(files), tuple(index[f] for f in folders), tuple(classes))


_LINE = re.compile(r"^(?P<path>.+?)(?:\s+(?P<label>-?\d+))?\s*$")


def _from_list_file(path: Path) -> ImageList:
    files, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"data.root: {path}: unreadable list file ({type(exc).__name__})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line.strip())
        files.append(path.parent / m["path"])
        labels.append(None if m["label"] is None else int(m["label"]))
        if (labels[0] is None) != (labels[-1] is None):
            raise ConfigError(f"{path}:{number}: give a label on every line or on none")
        if labels[-1] is not None and labels[-1] < 0:
            raise ConfigError(f"{path}:{number}: labels are class indices from 0 (got {labels[-1]})")
    if not files:
        raise MissingResource(f"data.root: the list file {path} names no images")
    if labels[0] is None:
        return ImageList(path.parent, tuple(files), None, ())
    classes = tuple(str(i) for i in range(max(labels) + 1))
    return ImageList(path.parent, tuple(files), tuple(labels), classes)


def center_crop(image, size: int):
    """ADM's centre crop of a PIL image to ``size`` x ``size`` (Dhariwal & Nichol 2021; DiT and IMM
    preprocess ImageNet with it): box-filter halvings while the short side is >= 2 size, a bicubic resize
    of the short side to ``size``, then the centre (offsets rounded down)."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), resample=Image.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


# what reading a broken or hostile file raises in PIL (truncated data, unknown format, bad headers)
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError)


def read_image(path: str | Path, size: int, channels: int = 3) -> torch.Tensor | str:
    """The image at ``path`` as uint8 [channels, size, size] (RGB or greyscale, ADM's centre crop), or,
    when it cannot be read, a string saying why."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = center_crop(im.convert("RGB" if channels == 3 else "L"), size)
            data = bytearray(im.tobytes())
    except _UNREADABLE + (Image.DecompressionBombError,) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    return torch.frombuffer(data, dtype=torch.uint8).view(size, size, channels).permute(2, 0, 1).contiguous()


class ImageItem(NamedTuple):
    """Item ``index`` of an image source: uint8 [C, H, W] (zeros when unreadable), its label (-1: none)
    and, for an image that could not be read, why (empty otherwise)."""

    index: int
    image: torch.Tensor
    label: int
    error: str


class ImageFiles(torch.utils.data.Dataset):
    """Map-style Dataset over an :class:`ImageList`: item i is the :class:`ImageItem` of file i, decoded
    and cropped in whichever process reads it (DataLoader workers)."""

    def __init__(self, images: ImageList, size: int, channels: int = 3):
        self.images, self.size, self.channels = images, int(size), int(channels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ImageItem:
        out = read_image(self.images.files[i], self.size, self.channels)
        label = -1 if self.images.labels is None else self.images.labels[i]
        if isinstance(out, str):
            return ImageItem(i, torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8), label, out)
        return ImageItem(i, out, label, "")

    def name(self, i: int) -> str:
        """File i, relative to the source's root, for messages."""
        path = self.images.files[i]
        try:
            return path.relative_to(self.images.root).as_posix()
        except ValueError:
            return str(path)


def stack_items(items: list[ImageItem]) -> ImageItem:
    """DataLoader collate: a batch as one :class:`ImageItem` of stacked indices [B], images [B, C, H, W],
    labels [B] and a tuple of B error strings."""
    return ImageItem(torch.tensor([it.index for it in items], dtype=torch.long),
                     torch.stack([it.image for it in items]),
                     torch.tensor([it.label for it in items], dtype=torch.long),
                     tuple(it.error for it in items))


def read_batches(source: torch.utils.data.Dataset, indices, batch_size: int, workers: int = 0):
    """Batches (:func:`stack_items`) of the items ``indices`` of ``source``, in order, decoded by
    ``workers`` DataLoader processes (0: in this one)."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(source, list(indices)), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=stack_items, prefetch_factor=4 if workers else None)
    yield from loader


_POOL = None


def decode(source: ImageFiles, indices) -> list[ImageItem]:
    """The items ``indices`` of ``source``, decoded by a pool of threads in this process (PIL releases
    the GIL while it decodes and resizes), in order."""
    global _POOL
    import os
    from concurrent.futures import ThreadPoolExecutor

    indices = [int(i) for i in indices]
    if len(indices) < 4:
        return [source[i] for i in indices]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="fewstep-decode")
    return list(_POOL.map(source.__getitem__, indices))


def skipped_message(where: str, skipped: list[tuple[str, str]], total: int, shown: int = 5) -> str:
    """One line: how many of ``total`` images were skipped, the first ``shown`` with why."""
    listed = "; ".join(f"{name} ({why})" for name, why in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"{where}: skipped {len(skipped)} of {total} images that could not be read: {listed}{more}"
