"""The on-disk format of encoded latents, written in shards and read memory-mapped.

An encoded folder (``fewstep encode``) holds::

    plan.json                  what is being encoded: source, image count, shard size, VAE, flips
    shards/00000.safetensors   shard k: the source's images [k S, (k + 1) S) that could be read
    meta.json                  written last, once every shard is complete: counts, channel statistics

A shard holds ``index`` (int64, the images' positions in the source), the posterior ``mean`` and
``std`` (float16), ``labels`` (int64) when the source has them, and ``mean_flip``/``std_flip`` for
the x-flipped images when asked; its metadata carries the per-channel sums for the statistics and the
images it skipped. Each shard is written to a temporary file and renamed, so one that exists is
complete and a killed encode loses only the shard in flight. A folder of fewstep 0.1 (one
``latents.safetensors``) reads as a single shard.

Reading maps each shard's tensors with ``numpy.memmap`` at the offsets of the safetensors header
(8-byte little-endian length, JSON header, raw little-endian data): processes on one node share the
page cache and hold only the rows they gather.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.errors import ConfigError, MissingResource
from fewstep.files import atomic_path, write_json

__all__ = ["LatentFiles", "channel_statistics", "finalise", "shard_path", "shard_sums", "write_latents", "write_shard"]

META, PLAN, SHARDS, LEGACY = "meta.json", "plan.json", "shards", "latents.safetensors"
FORMAT = 2  # 1: fewstep 0.1's single latents.safetensors
_NUMPY = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def shard_path(folder: str | Path, k: int) -> Path:
    return Path(folder) / SHARDS / f"{k:05d}.safetensors"


def shard_sums(mean: torch.Tensor, std: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel float64 sums over images and positions of mean, mean^2 and std^2, and their count:
    what :func:`channel_statistics` merges over shards."""
    m, s = mean.double(), std.double()
    return {"sum": m.sum(dim=(0, 2, 3)).tolist(), "sum_sq": (m * m).sum(dim=(0, 2, 3)).tolist(),
            "sum_var": (s * s).sum(dim=(0, 2, 3)).tolist(), "count": [float(m[:, 0].numel())] * m.shape[1]}


def channel_statistics(sums: list[dict[str, list[float]]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the latents training draws, z = mean + std e (e ~ N(0, I)), from the
    shards' sums: E z = E mean, Var z = Var(mean) + E[std^2] (population moments over images and
    positions)."""
    total = {k: np.sum([np.asarray(s[k], dtype=np.float64) for s in sums], axis=0) for k in sums[0]}
    mu = total["sum"] / total["count"]
    var = total["sum_sq"] / total["count"] - mu * mu + total["sum_var"] / total["count"]
    return mu.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist()


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """One shard, atomically (a temporary file renamed onto ``path``); metadata values as JSON."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in metadata.items()})
    return path


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """(the safetensors JSON header, the byte offset of its data)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return header, 8 + size


def _views(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only numpy view of one memory map of the file (one
    file descriptor per shard, however many tensors it holds)."""
    header, base = read_header(path)
    header.pop("__metadata__", None)
    whole = np.memmap(path, dtype=np.uint8, mode="r")  # (MADV_RANDOM measured 2.8x slower cold: bench/README)
    out = {}
    for name, spec in header.items():
        if spec["dtype"] not in _NUMPY:
            raise ConfigError(f"{path}: tensor {name} has dtype {spec['dtype']}, which fewstep does not read")
        begin, end = spec["data_offsets"]
        dtype = np.dtype(_NUMPY[spec["dtype"]]).newbyteorder("<")
        shape = tuple(spec["shape"])
        if base + end > whole.size or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise ConfigError(f"{path}: tensor {name} does not fit the file (truncated?)")
        out[name] = np.ndarray(shape, dtype=dtype, buffer=whole, offset=base + begin)
    return out


class LatentFiles:
    """The shards of an encoded folder, memory-mapped: ``rows(name, idx)`` gathers rows by global index
    (shards in order), ``labels`` are held in memory (8 bytes an image)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        paths = sorted((folder / SHARDS).glob("*.safetensors")) if (folder / SHARDS).is_dir() else []
        if not paths and (folder / LEGACY).is_file():
            paths = [folder / LEGACY]
        if not paths or not (folder / META).is_file():
            raise MissingResource(f"data.root: {folder} holds no encoded latents ({SHARDS}/ and {META}); create them "
                                  "with `fewstep encode --data <image dataset> --vae <AutoencoderKL> --out <folder>`")
        self.folder, self.paths = folder, paths
        self.arrays: dict[str, list[np.ndarray]] = {}
        counts = []
        for path in paths:
            views = _views(path)
            for name, view in views.items():
                self.arrays.setdefault(name, []).append(view)
            counts.append(views["mean"].shape[0])
        for name, arrays in self.arrays.items():
            if len(arrays) != len(paths):
                raise ConfigError(f"{folder}: tensor {name} is in some shards and not in others")
        self.ends = np.cumsum(counts)
        self.starts = self.ends - np.asarray(counts)
        labels = self.arrays.pop("labels", None)
        self.labels = None if labels is None else torch.from_numpy(np.concatenate([np.asarray(a) for a in labels]))
        self.shape = tuple(self.arrays["mean"][0].shape[1:])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def rows(self, name: str, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` (global indices) of tensor ``name``, copied out of the maps, in the order given."""
        idx = np.asarray(idx, dtype=np.int64)
        shard = np.searchsorted(self.ends, idx, side="right")
        local = idx - self.starts[shard]
        arrays = self.arrays[name]
        out = np.empty((len(idx), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
        for k in np.unique(shard):
            sel = np.nonzero(shard == k)[0]
            out[sel] = arrays[k][local[sel]]
        return torch.from_numpy(out)


def shard_headers(folder: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, safetensors header) of every complete shard, in order."""
    return [(p, read_header(p)[0]) for p in sorted((Path(folder) / SHARDS).glob("*.safetensors"))]


def finalise(folder: str | Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta.json`` from the complete shards of ``folder`` (their sums and skipped images) and the
    plan; returns it. The channel statistics are those of the unflipped images."""
    sums, skipped, n, latent_shape = [], [], 0, None
    for _, header in shard_headers(folder):
        meta = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
        skipped += meta.get("skipped", [])
        count = header["mean"]["shape"][0]
        if count:
            sums.append(meta["sums"])
            latent_shape = header["mean"]["shape"][1:]
        n += count
    if not sums:
        raise ConfigError(f"{folder}: no image could be encoded")
    mu, sd = channel_statistics(sums)
    meta = {"vae": plan["vae"], "image_shape": plan["image_shape"], "source": plan["source"], "n": n,
            "latent_shape": latent_shape, "channel_mean": mu, "channel_std": sd, "xflip": plan.get("xflip", False),
            "classes": plan.get("classes"),
            "skipped": len(skipped), "skipped_images": skipped}
    write_json(Path(folder) / META, meta)
    return meta


def write_latents(folder: str | Path, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor | None,
                  vae: str, image_shape: tuple[int, ...], source: str) -> Path:
    """Store an encoded set held in memory as one shard, with its plan and meta (each file atomically)."""
    folder = Path(folder)
    n = int(mean.shape[0])
    plan = {"source": source, "n": n, "shard_size": max(n, 1), "vae": vae, "image_shape": list(image_shape),
            "xflip": False, "labels": labels is not None, "format": FORMAT,
            "classes": None if labels is None or not n else int(labels.max()) + 1}
    tensors = {"index": torch.arange(n), "mean": mean, "std": std}
    if labels is not None:
        tensors["labels"] = labels.to(torch.long)
    write_shard(shard_path(folder, 0), tensors, {"sums": shard_sums(mean, std), "skipped": []})
    write_json(folder / PLAN, plan)
    finalise(folder, plan)
    return folder
