"""Factories of the built-in datasets and metrics (imported only when one is built)."""
from __future__ import annotations

from fewstep.data.toy import ToyDataset
from fewstep.eval import toy_metrics


def _params(cfg) -> dict:
    return cfg.model_dump(exclude={"name"})


def build_digits(cfg, sigma_d: float = 0.5):
    """sklearn's 8x8 digits as an image dataset with overall std sigma_d."""
    from fewstep.data.images import load_digits_dataset

    return load_digits_dataset(cfg.size, sigma_d, cfg.conditional, cfg.xflip, cfg.augment)


def build_cifar10(cfg, sigma_d: float = 0.5):
    """CIFAR-10 through torchvision as an image dataset with overall std sigma_d."""
    from fewstep.data.images import load_cifar10

    return load_cifar10(cfg.root, cfg.split, cfg.download, sigma_d, cfg.conditional, cfg.xflip, cfg.augment)


def build_image_folder(cfg, sigma_d: float = 0.5):
    """A folder of images as an image dataset with overall std sigma_d."""
    from fewstep.data.folder import load_image_folder

    return load_image_folder(cfg.root, cfg.size, sigma_d, cfg.conditional, cfg.xflip, cfg.channels, cfg.augment,
                             cfg.stream)


def build_latents(cfg, sigma_d: float = 0.5):
    """Encoded latents (``fewstep encode``), normalised per channel to sigma_d."""
    from fewstep.data.latents import LatentDataset

    return LatentDataset(cfg.root, sigma_d, cfg.channel_mean, cfg.channel_std, cfg.conditional, cfg.vae, cfg.xflip)


def build_toy(cfg, sigma_d: float = 0.5) -> ToyDataset:
    """A 2D toy set named by the registry entry, normalised to overall std sigma_d."""
    return ToyDataset(cfg.name, sigma_d, **_params(cfg))


class PointMetric:
    """A metric between two point sets, called as ``metric(samples, reference, generator)``."""

    kind = "points"

    def __init__(self, name: str, fn, **kwargs):
        self.name, self._fn, self._kwargs = name, fn, kwargs

    def __call__(self, x, y, generator=None) -> float:
        kwargs = dict(self._kwargs)
        if "generator" in kwargs:
            kwargs["generator"] = generator
        return float(self._fn(x, y, **kwargs))


def build_sw2(cfg) -> PointMetric:
    return PointMetric("sw2", toy_metrics.sliced_wasserstein2, n_projections=cfg.n_projections, generator=None)


def build_mmd(cfg) -> PointMetric:
    bw = tuple(cfg.bandwidths) if cfg.bandwidths else None
    return PointMetric("mmd", toy_metrics.mmd_rbf, bandwidths=bw)


def build_energy_distance(cfg) -> PointMetric:
    return PointMetric("energy", toy_metrics.energy_distance)


class FidelityMetric:
    """Image metrics through torch-fidelity, called as ``metric(samples_u8, reference_u8, generator)``
    and returning values labelled by their feature extractor (``FID``/``KID`` or ``FD-digits``/...).
    ``reference`` is ``"data"`` (the fresh data the evaluation passes), a torch-fidelity input name or a
    file of stored statistics (``.npz``, EDM2's ``.pkl``): with either of the last two, ``own_reference``
    is true and the evaluation hands the metric no data."""

    kind = "images"

    def __init__(self, name: str, features: str, *, kid: bool, kid_subsets: int, isc: bool, device: str,
                 prc: bool = False, weights: str | None = None, reference: str = "data"):
        self.name, self.features = name, features
        self.options = {"kid": kid, "isc": isc, "prc": prc, "device": device, "weights": weights,
                        "kid_subsets": kid_subsets}
        self.reference = reference
        self.own_reference = reference != "data"

    def __call__(self, x, y, generator=None) -> dict[str, float]:
        from fewstep.eval.fidelity import fidelity

        if self.reference.endswith((".npz", ".pkl")):
            from fewstep.eval.fidref import fidelity_to_reference

            return fidelity_to_reference(x, self.reference, features=self.features, isc=self.options["isc"],
                                         device=self.options["device"], weights=self.options["weights"])
        reference = y if self.reference == "data" else self.reference
        return fidelity(x, reference, features=self.features, fid=True, **self.options)


def build_fid(cfg) -> FidelityMetric:
    return FidelityMetric("fid", "inception", kid=cfg.kid, kid_subsets=cfg.kid_subsets, isc=cfg.isc, prc=cfg.prc,
                          device=cfg.device, weights=cfg.weights, reference=cfg.reference)


def build_fd_digits(cfg) -> FidelityMetric:
    return FidelityMetric("fd_digits", "digits", kid=cfg.kid, kid_subsets=cfg.kid_subsets, isc=cfg.isc,
                          device=cfg.device, reference=cfg.reference)
