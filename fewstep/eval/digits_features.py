"""A download-free feature extractor for image metrics: a small classifier of sklearn's 8x8 digits.

FID/KID/IS need a pretrained network; the standard one (Inception-v3) must be downloaded and is
slow on a CPU. For runs on the bundled 8x8 digits, fewstep trains its own tiny classifier on
``sklearn.datasets.load_digits()`` (1797 images, shipped with scikit-learn) in a few seconds and
caches it. Its 64-unit penultimate layer plays the role of Inception's pool3 features, so that

    FD-digits  = Frechet distance of the ``"64"`` features   (the FID recipe, Heusel et al. 2017,
                 arXiv:1706.08500, on this network instead of Inception),
    KID-digits = KID of the ``"64"`` features                 (Binkowski et al. 2018, arXiv:1801.01401),
    IS-digits  = Inception Score of the ``"logits_unbiased"`` (Salimans et al. 2016, arXiv:1606.03498).

These numbers are comparable only with each other (same classifier version and seed), never with
Inception FID; fewstep labels them accordingly.

The classifier (``DigitsNet``, version ``DIGITS_VERSION``): conv3x3(1->16) ReLU, conv3x3(16->32)
ReLU, maxpool 2 (8x8 -> 4x4), linear(512->64) = feature ``"64"`` (taken before its ReLU: about a
third of the units never fire on digits, so post-ReLU features would waste them), ReLU,
linear(64->10) = logits. After training, fc1 and fc2 are rescaled so that the features have unit
mean square on the training images without changing the classifier.

Training: Adam with a one-cycle schedule, 20 epochs of batches of 64; a random half of each batch
is shifted by a random offset in {-1, 0, 1}^2 pixels (zero fill; this light augmentation raised the
held-out accuracy by about half a point over four split seeds); one torch thread and fixed seeds,
so the weights are reproducible. The cached model is trained on the *train split* only (80%, a seeded permutation),
so :func:`digits_accuracy` on the held-out 20% is an honest accuracy of the very model in use
(about 0.99; measured at build time, stored in the file's metadata).

The extractor takes uint8 ``[N, C, H, W]`` (C = 1 or 3, any size), converts RGB to grey with the
ITU-R BT.601 luma weights, resizes to 8x8 by area averaging (adaptive average pooling) and scales
to [0, 1] with ink bright on a dark background (the orientation of ``fewstep.data.images``).

This module imports ``torch_fidelity`` (and so torchvision): import it lazily.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert

from fewstep.files import atomic_path

__all__ = [
    "DIGITS_VERSION", "NAME", "DigitsFeatureExtractor", "DigitsNet", "cache_dir", "classifier_path",
    "digits_accuracy", "digits_split", "load_digits_classifier", "register", "train_digits_classifier",
]

DIGITS_VERSION = 1  # bump when the architecture or training changes: the cache file name changes
NAME = "fewstep-digits"  # the torch-fidelity feature-extractor name
HOLDOUT = 0.2
EPOCHS = 20
BATCH = 64
LR = 3e-3
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def cache_dir() -> Path:
    """``$FEWSTEP_CACHE``, else ``$XDG_CACHE_HOME/fewstep``, else ``~/.cache/fewstep`` (not created)."""
    env = os.environ.get("FEWSTEP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fewstep"


def classifier_path(seed: int = 0) -> Path:
    return cache_dir() / f"digits_classifier_v{DIGITS_VERSION}_seed{seed}.safetensors"


class DigitsNet(nn.Module):
    """8x8 grey digits in [0, 1] -> 10 logits; :meth:`features` gives the 64 penultimate units."""

    heldout_accuracy: float = float("nan")  # set by training (or from the cached file's metadata)
    train_seconds: float = float("nan")

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64 penultimate units *before* their ReLU (all informative; ~20 of them never fire)."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc1(F.max_pool2d(h, 2).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.features(x)))


def digits_split(seed: int = 0, holdout: float = HOLDOUT):
    """``(x_train, y_train, x_test, y_test)``: the 1797 digits as [N, 1, 8, 8] floats in [0, 1],
    split by a permutation seeded with ``seed`` (the last ``holdout`` fraction is held out)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.as_tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(holdout * len(x)))
    tr, te = perm[: len(x) - n_test], perm[len(x) - n_test:]
    return x[tr], y[tr], x[te], y[te]


def _shift_half(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift a random half of the images by one pixel in each axis (-1, 0 or +1; zeros fill in)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    keep = torch.rand(n, generator=gen) < 0.5
    dy[keep], dx[keep] = 1, 1
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [n, h, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [n, 1, w]
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def train_digits_classifier(seed: int = 0, *, epochs: int = EPOCHS, holdout: float = HOLDOUT) -> DigitsNet:
    """Train :class:`DigitsNet` on the train split of :func:`digits_split` (seeded, deterministic).

    Runs on one CPU thread (restored afterwards) and the global RNG state is left untouched.
    The returned model carries ``heldout_accuracy`` and ``train_seconds`` attributes.
    """
    x_tr, y_tr, x_te, y_te = digits_split(seed, holdout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsNet()
        gen = torch.Generator().manual_seed(seed + 1)
        steps_per_epoch = -(-len(x_tr) // BATCH)
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=epochs * steps_per_epoch)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_tr), generator=gen)
            for i in range(0, len(order), BATCH):
                idx = order[i:i + BATCH]
                loss = F.cross_entropy(model(_shift_half(x_tr[idx], gen)), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval().requires_grad_(False)
        _normalise_features(model, x_tr)
    finally:
        torch.set_num_threads(threads)
    model.train_seconds = time.perf_counter() - t0
    model.heldout_accuracy = _accuracy(model, x_te, y_te) if len(x_te) else float("nan")
    return model


@torch.no_grad()
def _normalise_features(model: DigitsNet, x: torch.Tensor) -> None:
    """Rescale fc1 by 1/s and fc2 by s, s = RMS of the features on ``x``: the classifier is unchanged
    (ReLU is positively homogeneous) and the features get unit mean square, which keeps KID's cubic
    kernel ``(a.b / 64 + 1)^3`` at an O(1) scale, as for Inception features."""
    s = model.features(x).pow(2).mean().sqrt()
    model.fc1.weight /= s
    model.fc1.bias /= s
    model.fc2.weight *= s


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).double().mean().item()


def digits_accuracy(model: nn.Module, seed: int = 0, holdout: float = HOLDOUT) -> float:
    """Accuracy of ``model`` on the held-out split of :func:`digits_split` (the same ``seed``)."""
    _, _, x_te, y_te = digits_split(seed, holdout)
    return _accuracy(model.eval(), x_te, y_te)


def _save_atomic(model: DigitsNet, path: Path, seed: int) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"version": str(DIGITS_VERSION), "seed": str(seed), "holdout": str(HOLDOUT),
            "heldout_accuracy": f"{model.heldout_accuracy:.6f}", "train_seconds": f"{model.train_seconds:.3f}"}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)


def _load(path: Path) -> DigitsNet:
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = DigitsNet()
    model.load_state_dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model.heldout_accuracy = float(meta.get("heldout_accuracy", "nan"))
    return model.eval().requires_grad_(False)


def load_digits_classifier(seed: int = 0, path: str | os.PathLike | None = None) -> DigitsNet:
    """The cached classifier for ``seed``; trained (a few seconds) and cached atomically on a miss.

    ``path`` loads an explicit safetensors file instead (it must exist). A cache file that cannot
    be read (e.g. truncated by a full disk) is retrained and replaced.
    """
    if path is not None:
        return _load(Path(path))
    target = classifier_path(seed)
    if target.is_file():
        try:
            return _load(target)
        except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt below
            pass
    model = train_digits_classifier(seed)
    _save_atomic(model, target, seed)
    return model


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor ``"fewstep-digits"``: features ``"64"``, ``"logits_unbiased"``, ``"logits"``.

    ``"logits_unbiased"`` is ``relu(features) @ W.T`` and ``"logits"`` adds the bias, as in
    torch-fidelity's Inception. ``feature_extractor_weights_path`` (a safetensors file written by
    this module) replaces the cached seed-0 classifier.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net = load_digits_classifier(path=feature_extractor_weights_path)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "64", "logits_unbiased", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 1 or 3, H, W] -> float [N, 1, 8, 8] in [0, 1] (luma, then area averaging)."""
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1] in (1, 3), f"Input is not Bx1xHxW or Bx3xHxW: {tuple(x.shape)}")
        x = x.to(torch.float32)
        if x.shape[1] == 3:
            x = (x * self.luma).sum(1, keepdim=True)
        return F.adaptive_avg_pool2d(x, (8, 8)) / 255.0

    def forward(self, x):
        h = self.net.features(self.preprocess(x))
        out = {"64": h}
        if "logits_unbiased" in self.features_list or "logits" in self.features_list:
            out["logits_unbiased"] = F.relu(h) @ self.net.fc2.weight.T
            out["logits"] = out["logits_unbiased"] + self.net.fc2.bias
        return tuple(out[k] for k in self.features_list)


def register() -> None:
    """Register :class:`DigitsFeatureExtractor` with torch-fidelity as ``"fewstep-digits"`` (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    current = FEATURE_EXTRACTORS_REGISTRY.get(NAME)
    if current is DigitsFeatureExtractor:
        return
    if current is not None and current.__qualname__ == DigitsFeatureExtractor.__qualname__:
        FEATURE_EXTRACTORS_REGISTRY[NAME] = DigitsFeatureExtractor  # this module was reloaded
        return
    register_feature_extractor(NAME, DigitsFeatureExtractor)
