"""``fewstep encode`` at scale: an image source through a VAE into shards, across processes, resumable.

The source's images are cut into shards of ``shard_size`` consecutive images; under torchrun, process
r encodes shards r, r + world, ...; each shard is read by DataLoader workers (decode and ADM crop),
encoded batch by batch and written atomically (:mod:`fewstep.data.latentfiles`). A re-run with the same
settings skips the complete shards, so a killed encode loses at most the shards in flight, and the
result does not depend on the number of processes or on interruptions: a shard is always encoded in
the same batches. Rank 0 writes ``meta.json`` once every shard is there.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fewstep.data.imagefiles import read_batches, skipped_message
from fewstep.data.latentfiles import FORMAT, META, PLAN, SHARDS, finalise, shard_path, shard_sums, write_shard
from fewstep.data.vae import posterior
from fewstep.errors import ConfigError
from fewstep.files import write_json

__all__ = ["EncodeResult", "encode_source"]


@dataclass
class EncodeResult:
    """What an encode did in this process, and the folder's meta (on rank 0 once complete)."""

    folder: Path
    meta: dict[str, Any] | None
    shards_done: int = 0
    images_done: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _OneProcess:
    """What encode_source needs of :class:`fewstep.run.dist.Dist` (a layer above data), for one process."""

    rank, world, main = 0, 1, True

    def barrier(self) -> None:
        pass


def _plan_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _delete_encode(out: Path) -> None:
    """An earlier encode's files in ``out``: its plan, meta.json and shards/ (only the files it writes)."""
    for name in (META, PLAN):
        (out / name).unlink(missing_ok=True)
    if (out / SHARDS).is_dir():
        for shard in (out / SHARDS).iterdir():
            if shard.is_file():
                shard.unlink()
        if not any((out / SHARDS).iterdir()):
            (out / SHARDS).rmdir()


def encode_source(source, vae, out: str | Path, *, plan: dict[str, Any], shard_size: int = 10_000,
                  batch_size: int = 64, workers: int = 0, xflip: bool = False, dist=None, progress=None,
                  force: bool = False) -> EncodeResult:
    """Encode every image of ``source`` (a map-style Dataset of ImageItem with ``name(i)``) into ``out``.

    ``plan`` describes the source (``source``, ``vae``, ``image_shape``, ``labels``); with the shard
    size, the image count and ``xflip`` it goes into ``plan.json``, and a folder holding another plan is
    refused (one line) unless ``force``, which deletes the earlier encode (its plan, shards and meta.json;
    nothing else in the folder) first. ``dist``: a :class:`fewstep.run.dist.Dist` under torchrun (None: one process).
    ``progress(images, total, images_per_s)`` is called on rank 0 after every batch.
    """
    dist = dist or _OneProcess()
    out = Path(out)
    n = len(source)
    plan = {**plan, "n": n, "shard_size": int(shard_size), "xflip": bool(xflip), "format": FORMAT}
    if force:
        if dist.main:
            _delete_encode(out)
        dist.barrier()
    if (out / PLAN).is_file():
        old = json.loads((out / PLAN).read_text())
        if _plan_mismatch(old, plan):
            raise ConfigError(f"--out {out}: holds an encode with other settings "
                              f"({', '.join(_plan_mismatch(old, plan))} differ); give a new folder, or --force to "
                              f"replace it")
        if (out / META).is_file():
            return EncodeResult(out, json.loads((out / META).read_text()) if dist.main else None)
    if dist.main:  # the half-written shards of a killed encode (no rank writes before the barrier)
        for stale in (out / SHARDS).glob(".*.tmp") if (out / SHARDS).is_dir() else []:
            stale.unlink()
    dist.barrier()  # every rank has compared before rank 0 writes the plan
    if dist.main:
        write_json(out / PLAN, plan)
    shards = math.ceil(n / shard_size)
    todo = [k for k in range(dist.rank, shards, dist.world) if not shard_path(out, k).exists()]
    total = sum(min(n, (k + 1) * shard_size) - k * shard_size for k in todo)
    result = EncodeResult(out, None)
    t0 = time.perf_counter()
    for k in todo:
        lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
        parts: dict[str, list[torch.Tensor]] = {}
        skipped = []
        for batch in read_batches(source, range(lo, hi), batch_size, workers):
            ok = torch.tensor([not e for e in batch.error], dtype=torch.bool)
            skipped += [(source.name(int(i)), e) for i, e in zip(batch.index, batch.error) if e]
            if ok.any():
                images = batch.image[ok]
                got = {"index": batch.index[ok], "labels": batch.label[ok]}
                got["mean"], got["std"] = posterior(vae, images)
                if xflip:
                    got["mean_flip"], got["std_flip"] = posterior(vae, images.flip(-1))
                for name, value in got.items():
                    parts.setdefault(name, []).append(value)
            result.images_done += len(batch.index)
            if progress and dist.main:
                progress(result.images_done, total, result.images_done / max(time.perf_counter() - t0, 1e-9))
        tensors = {name: torch.cat(values) for name, values in parts.items()} if parts else \
            _empty(vae, source, xflip)
        if not plan.get("labels"):
            tensors.pop("labels", None)
        write_shard(shard_path(out, k), tensors, {"sums": shard_sums(tensors["mean"], tensors["std"]),
                                                    "skipped": skipped})
        result.skipped += skipped
        result.shards_done += 1
    result.seconds = time.perf_counter() - t0
    dist.barrier()
    if dist.main:
        missing = [k for k in range(shards) if not shard_path(out, k).exists()]
        if missing:
            raise ConfigError(f"--out {out}: shards {missing[:5]} are missing after the encode (another process "
                              "failed?); run the same command again to encode them")
        result.meta = finalise(out, plan)
    return result


def _empty(vae, source, xflip: bool) -> dict[str, torch.Tensor]:
    """The tensors of a shard whose images were all unreadable: zero rows, shapes from one encoding."""
    probe = source[0].image[None]
    mean, std = posterior(vae, torch.zeros_like(probe))
    empty = {"index": torch.zeros(0, dtype=torch.long), "labels": torch.zeros(0, dtype=torch.long),
             "mean": mean[:0], "std": std[:0]}
    if xflip:
        empty["mean_flip"], empty["std_flip"] = mean[:0], std[:0]
    return empty


def summary(result: EncodeResult, meta: dict[str, Any]) -> list[str]:
    """The lines ``fewstep encode`` prints at the end."""
    lines = [f"encoded {meta['n']} images {tuple(meta['image_shape'])} -> latents {tuple(meta['latent_shape'])} "
             f"in {result.folder}" + (" (and their x-flips)" if meta.get("xflip") else "")]
    if result.images_done:
        lines.append(f"this process: {result.images_done} images in {result.shards_done} shards, "
                     f"{result.images_done / max(result.seconds, 1e-9):.1f} images/s")
    lines.append("channel mean " + ", ".join(f"{v:.4f}" for v in meta["channel_mean"]) + "; std "
                 + ", ".join(f"{v:.4f}" for v in meta["channel_std"]))
    if meta.get("classes"):
        lines.append(f"{meta['classes']} classes")
    if meta.get("skipped"):
        lines.append(skipped_message(meta["source"], [tuple(x) for x in meta["skipped_images"]],
                                     meta["n"] + meta["skipped"]) + f" (all listed in {result.folder / META})")
    return lines
