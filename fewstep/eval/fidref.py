"""FID against stored reference statistics (Heusel et al. 2017): the mean and covariance of a reference
set's features, computed once in one streaming pass (its share of the images per process under
torchrun), stored as ``.npz`` under the key names of ADM's evaluation suite and clean-fid (``mu``,
``sigma``), and the Frechet distance of samples to them.

An ImageNet FID-50k then never re-reads ImageNet: ``fewstep fid-ref IMAGES --out ref.npz`` once, and
the ``fid`` metric with ``reference: ref.npz``. The features are torch-fidelity's (``inception``: the
TF FID Inception's 2048-d pool features, what ADM's suite and the papers use; ``digits``: fewstep's
CPU-scale classifier), and the distance is torch-fidelity's, so FID against stored statistics equals
FID against the images they came from (a test checks it). Files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.data.imagefiles import read_batches
from fewstep.errors import ConfigError, MissingResource
from fewstep.eval.fidelity import TF_KEYS, extractor_name, fidelity, inception_weights, label, resolve_cuda
from fewstep.files import atomic_path

__all__ = ["Moments", "fidelity_to_reference", "frechet_to_reference", "load_reference", "reference_statistics",
           "save_reference"]


def feature_extractor(features: str = "inception", weights: str | os.PathLike | None = None, device="auto"):
    """(callable uint8 [B, 3, H, W] -> float64 features [B, D] on the CPU, the torch device it runs on):
    the extractor and layer torch-fidelity's FID uses for ``features``."""
    from torch_fidelity.utils import create_feature_extractor, resolve_feature_layer_for_metric

    name = extractor_name(features)
    if features == "inception":
        weights = inception_weights(weights)
    layer = resolve_feature_layer_for_metric("fid", feature_extractor=name)
    cuda, index = resolve_cuda(device)
    where = torch.device("cuda", index if index is not None else torch.cuda.current_device()) if cuda else \
        torch.device("cpu")
    net = create_feature_extractor(name, [layer], cuda=False, feature_extractor_weights_path=weights).to(where)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        (out,) = net(x.to(where))
        return out.double().cpu()

    return extract, where


class Moments:
    """Running float64 sums of features f: the count n, sum f and sum f f^T; merged over processes by
    summing, and turned into the mean and the unbiased covariance that ``numpy.cov`` gives."""

    def __init__(self, dim: int):
        self.n = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, f: torch.Tensor) -> None:
        f = f.double()
        self.n += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def merge(self, dist, device) -> None:
        """Sum over torchrun's processes (in place, on every rank)."""
        if dist is None or dist.world == 1:
            return
        packed = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64), self.total, self.outer.flatten()])
        packed = dist.mean(packed.to(device)).cpu() * dist.world
        dim = self.total.numel()
        self.n = round(float(packed[0]))
        self.total, self.outer = packed[1:1 + dim], packed[1 + dim:].view(dim, dim)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) in float64: sigma = (sum f f^T - n mu mu^T) / (n - 1)."""
        if self.n < 2:
            raise ConfigError(f"fid-ref: {self.n} readable image(s); a covariance needs at least 2")
        mu = self.total / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), sigma.numpy()


def reference_statistics(source, *, features: str = "inception", weights=None, batch_size: int = 128,
                         workers: int = 0, device="auto", dist=None, progress=None
                         ) -> tuple[np.ndarray, np.ndarray, int, list[tuple[str, str]]]:
    """(mu, sigma, images used, images skipped) of the features of every readable image of ``source`` (a
    map-style Dataset of ImageItem with ``name(i)``). Under torchrun process r reads images r, r + world,
    ...; the sums are merged, so every rank returns the statistics of the whole set. ``progress(images,
    total)`` is called on rank 0 after every batch."""
    extract, where = feature_extractor(features, weights, device)
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world)
    mine = range(rank, len(source), world)
    moments: Moments | None = None
    skipped, done = [], 0
    for batch in read_batches(source, mine, batch_size, workers):
        ok = torch.tensor([not e for e in batch.error], dtype=torch.bool)
        skipped += [(source.name(int(i)), e) for i, e in zip(batch.index, batch.error) if e]
        if ok.any():
            f = extract(batch.image[ok])
            moments = moments or Moments(f.shape[1])
            moments.add(f)
        done += len(batch.index)
        if progress and rank == 0:
            progress(done, len(mine))
    if moments is None:  # this process read nothing usable: learn the width from one blank image
        moments = Moments(extract(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1])
    moments.merge(dist, where)
    mu, sigma = moments.statistics()
    return mu, sigma, moments.n, skipped


def save_reference(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta: Any) -> Path:
    """``mu`` and ``sigma`` (float64) and string metadata (``meta_<key>``) in an ``.npz``, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no second .npz
        np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                 **{f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()})
    return path


def load_reference(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) in float64 from an ``.npz`` with the keys ``mu`` and ``sigma`` (fewstep's, EDM's
    ``fid-refs``, ADM's reference batches, clean-fid's statistics; read with ``allow_pickle=False``), or
    from EDM2's ``.pkl`` statistics (``{"fid": {"mu", "sigma"}, ...}``, e.g. the ImageNet-256 reference
    lumalabs/tvm publishes), read by fewstep's restricted unpickler, which builds arrays and containers
    and runs nothing. Anything else is one line."""
    path = Path(path)
    if not path.is_file():
        raise MissingResource(f"metric reference {path}: no such file; make it with `fewstep fid-ref IMAGES "
                              f"--out {path}`")
    if path.suffix.lower() == ".pkl":
        return _check(path, *_from_pickle(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = sorted(data.files)
            if "mu" not in keys or "sigma" not in keys:
                raise ConfigError(f"metric reference {path}: holds {', '.join(keys) or 'nothing'}, not the statistics "
                                  "mu and sigma; make them with `fewstep fid-ref`")
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (OSError, ValueError, EOFError) as exc:  # not a zip, truncated, an object (pickled) array
        raise ConfigError(f"metric reference {path}: not a readable .npz of statistics ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return _check(path, mu, sigma)


def _from_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from fewstep.run.pickles import load_persistence_pickle

    obj = load_persistence_pickle(path)
    stats = obj.get("fid", obj) if isinstance(obj, dict) else None
    if not (isinstance(stats, dict) and "mu" in stats and "sigma" in stats):
        what = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"metric reference {path}: holds {what}, not the statistics fid.mu and fid.sigma")
    return np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)


def _check(path: Path, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ConfigError(f"metric reference {path}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                          "(need [D] and [D, D])")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ConfigError(f"metric reference {path}: mu or sigma holds NaN or inf")
    return mu, sigma


def frechet_to_reference(samples_u8: torch.Tensor, path: str | Path, *, features: str = "inception", weights=None,
                         device="auto", batch_size: int = 128) -> float:
    """The Frechet distance between the features of uint8 samples [N, C, H, W] and stored statistics
    (torch-fidelity's formula: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)))."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu_ref, sigma_ref = load_reference(path)
    extract, _ = feature_extractor(features, weights, device)
    f = torch.cat([extract(samples_u8[i:i + batch_size]) for i in range(0, samples_u8.shape[0], batch_size)])
    if f.shape[1] != mu_ref.size:
        raise ConfigError(f"metric reference {path}: {mu_ref.size}-d statistics, but {features} features are "
                          f"{f.shape[1]}-d")
    mu, sigma = f.mean(0).numpy(), np.cov(f.numpy(), rowvar=False)
    return fid_statistics_to_metric({"mu": mu, "sigma": sigma}, {"mu": mu_ref, "sigma": sigma_ref},
                                    verbose=False)[KEY_METRIC_FID]


def fidelity_to_reference(samples_u8: torch.Tensor, path: str | Path, *, features: str = "inception",
                          isc: bool = False, device="auto", weights=None, batch_size: int = 128) -> dict[str, float]:
    """What :func:`fewstep.eval.fidelity.fidelity` reports, against stored statistics: ``FID`` (or
    ``FD-<features>``) and, when asked, IS (from the samples alone); KID and precision/recall need
    reference images and are left out."""
    out = label({TF_KEYS["fid"]: frechet_to_reference(samples_u8, path, features=features, weights=weights,
                                                      device=device, batch_size=batch_size)}, features)
    if isc:
        out.update(fidelity(samples_u8, samples_u8, features=features, fid=False, kid=False, isc=True, device=device,
                            weights=weights, batch_size=batch_size, cache=False))
    return out
