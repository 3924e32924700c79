"""Image metrics (FID, KID, IS, precision/recall) through torch-fidelity, offline-friendly.

``fidelity(samples, reference, features=...)`` hands uint8 images to
``torch_fidelity.calculate_metrics`` with one of two feature extractors:

- ``"inception"``: torch-fidelity's ``inception-v3-compat`` (the TF FID Inception, i.e. the legacy
  TTUR numbers papers report). Its weights file is never downloaded here: :func:`inception_weights`
  finds it or raises a one-line :class:`~fewstep.errors.ConfigError` saying where to put it.
  Results: ``"FID"``, ``"KID"``, ``"IS"``, and ``"precision"``/``"recall"`` (Kynkaenniemi et al.
  2019, arXiv:1904.06991), which use VGG16 features as in that paper (weights: :func:`vgg16_weights`).
- ``"digits"``: fewstep's own 8x8-digits classifier (:mod:`fewstep.eval.digits_features`, no
  download). Results: ``"FD-digits"``, ``"KID-digits"``, ``"IS-digits"``, ``"precision-digits"``,
  ``"recall-digits"`` -- never to be mistaken for Inception numbers.
- any other feature-extractor name registered with torch-fidelity: keys ``"FD-<name>"`` etc.

Reference caching (verified in the torch-fidelity 0.4.0 source, ``utils.py``/``metrics.py``): a
Dataset input *is* cached when ``input2_cache_name`` is given: each requested feature layer is
saved as ``<name>-<extractor>-features-<layer>.pt`` and the FID statistics as
``<name>-<extractor>-stat-fid-<layer>.pt`` under ``cache_root``. KID, IS and PRC are computed
from the cached features (only the samples are re-encoded), and an FID-only call loads the cached
statistics without touching the reference at all. The cache key contains neither the extractor's
weights nor its version, so fewstep keeps one ``cache_root`` per extractor version
(``cache_dir()/fidelity/<tag>``) and names a tensor reference by a SHA-1 of its shape and bytes.
A registered input such as ``"cifar10-train"`` is cached by torch-fidelity under its own name.
The files are pickles read with ``torch.load(weights_only=False)``: trust the cache directory.

torch-fidelity always gets ``save_cpu_ram=True`` and ``verbose=False``: the images are in memory,
so DataLoader workers buy nothing (and warn on a 2-core machine), and precision/recall then uses
its blockwise distances instead of one N x N matrix (10 GB at N = 50k).

This module imports neither torch_fidelity nor torchvision until a function needs them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from fewstep.errors import ConfigError, MissingResource

__all__ = ["EXTRACTORS", "INCEPTION_FILE", "TF_KEYS", "UInt8Images", "extractor_name", "fidelity", "inception_weights",
           "label", "resolve_cuda", "vgg16_weights"]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_ENV = "FEWSTEP_INCEPTION_WEIGHTS"
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1 (a plain state dict)
VGG16_ENV = "FEWSTEP_VGG16_WEIGHTS"
EXTRACTORS = {"inception": "inception-v3-compat", "digits": "fewstep-digits"}
_DEFAULT_FILES = {"inception": INCEPTION_FILE, "vgg16": VGG16_FILE}  # their caches need no weights hash
_INCEPTION_KEYS = {"fid": "FID", "kid": "KID", "isc": "IS", "precision": "precision", "recall": "recall"}
TF_KEYS = {"fid": "frechet_inception_distance", "kid": "kernel_inception_distance_mean",
            "isc": "inception_score_mean", "precision": "precision", "recall": "recall"}


class UInt8Images(torch.utils.data.Dataset):
    """A uint8 tensor ``[N, C, H, W]`` (C = 1 or 3) as a Dataset of ``[3, H, W]`` uint8 items.

    One channel is repeated to three, since torch-fidelity's Inception asserts RGB input.
    """

    def __init__(self, images: torch.Tensor):
        if not torch.is_tensor(images) or images.dtype != torch.uint8:
            raise ValueError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images))}")
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
            raise ValueError(f"images must be [N>0, 1 or 3, H, W], got {tuple(images.shape)}")
        self.images = images.detach().cpu()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _weights_error(what: str, file: str, url: str, env: str, problem: str) -> MissingResource:
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    field = ", or give that path in the recipe field `weights`" if what == "Inception" else ""
    return MissingResource(f"{what} weights {problem}: fewstep never downloads them; fetch {file} from {url} "
                       f"and put it in {ckpt}, or set {env}=/path/to/{file}{field}")


def _resolve_weights(path, what: str, file: str, env: str, url_fn) -> str:
    """Explicit ``path`` > ``$env`` > ``torch.hub.get_dir()/checkpoints/file``; must exist."""
    if path is not None:
        if not Path(path).is_file():
            raise _weights_error(what, file, url_fn(), env, f"file {path} does not exist")
        return str(path)
    if os.environ.get(env):
        if not Path(os.environ[env]).is_file():
            raise _weights_error(what, file, url_fn(), env, f"file {env}={os.environ[env]} does not exist")
        return os.environ[env]
    default = Path(torch.hub.get_dir()) / "checkpoints" / file
    if default.is_file():
        return str(default)
    raise _weights_error(what, file, url_fn(), env, f"not found ({file})")


def _inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def _vgg16_url() -> str:
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1.url


def inception_weights(path: str | os.PathLike | None = None) -> str:
    """Path of torch-fidelity's Inception weights (``INCEPTION_FILE``), never downloaded.

    Order: ``path`` (must exist), ``$FEWSTEP_INCEPTION_WEIGHTS``, then
    ``torch.hub.get_dir()/checkpoints/INCEPTION_FILE`` (where torch hub itself would cache it).
    Raises a one-line ConfigError naming the file, its URL and these places.
    """
    return _resolve_weights(path, "Inception", INCEPTION_FILE, INCEPTION_ENV, _inception_url)


def vgg16_weights(path: str | os.PathLike | None = None) -> str:
    """Path of torchvision's VGG16 ImageNet weights (for precision/recall), resolved like Inception's."""
    return _resolve_weights(path, "VGG16", VGG16_FILE, VGG16_ENV, _vgg16_url)


def resolve_cuda(device) -> tuple[bool, int | None]:
    """(use CUDA?, device index) for ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device."""
    if str(device) == "auto":
        return torch.cuda.is_available(), None
    dev = torch.device(device)
    if dev.type == "cpu":
        return False, None
    if dev.type != "cuda":
        raise ConfigError(f"image metrics run on cpu or cuda, not {dev}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested for image metrics but CUDA is not available")
    return True, dev.index


def _content_name(features: str, images: torch.Tensor) -> str:
    h = hashlib.sha1(f"{tuple(images.shape)}|{images.dtype}|".encode())
    h.update(images.detach().cpu().contiguous().numpy())
    return f"fewstep-{features}-{images.shape[-2]}x{images.shape[-1]}-{h.hexdigest()[:16]}"


def _extractor_tag(features: str, weights) -> str:
    """Directory name of the reference cache: changes with the extractor's weights or version."""
    if features == "digits":
        from fewstep.eval.digits_features import DIGITS_VERSION

        tag = f"digits-v{DIGITS_VERSION}-seed0"
    else:
        tag = features
    if weights is not None and Path(weights).name != _DEFAULT_FILES.get(features):
        tag += "-" + hashlib.sha1(str(Path(weights).resolve()).encode()).hexdigest()[:8]
    return tag


def extractor_name(features: str) -> str:
    """torch-fidelity's name of the feature extractor for ``features`` (``inception``, ``digits``, or a name
    registered with torch-fidelity), registering fewstep's digits extractor on first use."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if features == "digits":
        from fewstep.eval.digits_features import register

        register()
    name = EXTRACTORS.get(features, features)
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ConfigError(f"image metrics: unknown features {features!r}; use 'inception', 'digits' or one of "
                          f"{sorted(FEATURE_EXTRACTORS_REGISTRY)}")
    return name


def fidelity(samples_u8: torch.Tensor, reference: torch.Tensor | str, *, features: str = "inception",
             fid: bool = True, kid: bool = True, isc: bool = False, prc: bool = False,
             device="auto", weights: str | os.PathLike | None = None, batch_size: int = 128,
             kid_subset_size: int | None = None, kid_subsets: int = 100, isc_splits: int = 10,
             cache: bool = True, rng_seed: int = 2020, datasets_root: str | None = None) -> dict[str, float]:
    """FID/KID/IS/precision-recall of uint8 samples ``[N, C, H, W]`` against a reference.

    ``reference`` is a uint8 tensor (statistics cached by content when ``cache``) or the name of a
    torch-fidelity registered input such as ``"cifar10-train"`` (cached by that name;
    ``datasets_root`` is where torch-fidelity looks for it); stored statistics (``.npz``) go through
    :func:`fewstep.eval.fidref.fidelity_to_reference`. ``weights`` overrides the extractor's weights
    file (Inception: see :func:`inception_weights`). ``kid_subset_size`` (default 1000) is
    clamped to the smaller set (for a named reference, to the sample count only), ``isc_splits`` to
    the sample count. Keys are labelled by extractor (module docstring); KID and IS are the means
    over subsets / splits. Runs on CUDA only when ``device`` resolves to it (``"auto"``: if available).
    """
    if not (fid or kid or isc or prc):
        raise ValueError("fidelity: no metric requested")
    import torch_fidelity
    from torch_fidelity.registry import DATASETS_REGISTRY

    extractor = extractor_name(features)
    if isinstance(reference, str) and reference not in DATASETS_REGISTRY:
        raise ConfigError(f"image metrics: reference {reference!r} is not a torch-fidelity registered input "
                          f"({', '.join(sorted(DATASETS_REGISTRY))}) nor a uint8 tensor")
    cuda, index = resolve_cuda(device)
    if weights is not None and features != "inception" and not Path(weights).is_file():
        raise ConfigError(f"image metrics: weights file {weights} for features {features!r} does not exist")
    # Resolve every weights file before any work, so a missing one fails fast.
    main_weights = inception_weights(weights) if features == "inception" else weights
    vgg_path = vgg16_weights() if (prc and features == "inception") else None

    samples = UInt8Images(samples_u8)
    n1 = len(samples)
    kwargs = dict(input1=samples, cuda=cuda, batch_size=batch_size, verbose=False, save_cpu_ram=True,
                  cache=cache, rng_seed=rng_seed, kid_subsets=kid_subsets, isc_splits=min(isc_splits, n1))
    if datasets_root is not None:
        kwargs["datasets_root"] = str(datasets_root)
    if isinstance(reference, str):
        kwargs["input2"], n2 = reference, n1
    else:
        kwargs["input2"] = ref = UInt8Images(reference)
        n2 = len(ref)
        if cache:
            kwargs["input2_cache_name"] = _content_name(features, reference)
    kwargs["kid_subset_size"] = min(kid_subset_size or 1000, n1, n2)

    from fewstep.eval.digits_features import cache_dir

    def run(fe: str, w, tag: str, **flags) -> dict:
        args = dict(kwargs, feature_extractor=fe, feature_extractor_weights_path=w,
                    cache_root=str(cache_dir() / "fidelity" / tag), **flags)
        if not (flags.get("fid") or flags.get("kid") or flags.get("prc")):
            args.update(input2=None, input2_cache_name=None)  # IS needs the samples only
        if cuda and index is not None:
            with torch.cuda.device(index):
                return torch_fidelity.calculate_metrics(**args)
        return torch_fidelity.calculate_metrics(**args)

    raw: dict = {}
    main_prc = prc and features != "inception"
    if fid or kid or isc or main_prc:
        raw.update(run(extractor, main_weights, _extractor_tag(features, main_weights),
                       fid=fid, kid=kid, isc=isc, prc=main_prc))
    if prc and features == "inception":
        raw.update(run("vgg16", vgg_path, _extractor_tag("vgg16", vgg_path), prc=True))
    return label(raw, features)


def label(raw: dict, features: str) -> dict[str, float]:
    """torch-fidelity's result keys as fewstep's labels (``FID``... or ``FD-<features>``...)."""
    out = {}
    for short, tf_key in TF_KEYS.items():
        if tf_key in raw:
            if features == "inception":
                label = _INCEPTION_KEYS[short]
            else:
                label = {"fid": "FD", "kid": "KID", "isc": "IS"}.get(short, short) + f"-{features}"
            out[label] = float(raw[tf_key])
    return out
