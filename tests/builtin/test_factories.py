"""fewstep.builtin.factories: the built-in datasets and metrics as their registry entries build them."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.builtin import factories
from fewstep.errors import MissingResource


def _cfg(regs, kind, name, **fields):
    return regs.kind(kind).get(name).model().model_validate({"name": name, **fields})


def test_build_toy_takes_the_name_and_parameters_from_the_config(regs):
    data = factories.build_toy(_cfg(regs, "datasets", "checkerboard", squares=2), 0.8)
    assert data.name == "checkerboard" and data.params == {"squares": 2} and data.sigma_d == 0.8
    x = data.sample(20000, torch.Generator().manual_seed(0)).x
    assert x.shape == (20000, 2)
    assert x.pow(2).mean().sqrt().item() == pytest.approx(0.8, rel=0.03)  # overall std sigma_d
    # with 2 squares per side, the black cells are two opposite quadrants: x and y have one sign product
    signs = torch.sign(x[:, 0] * x[:, 1])
    assert abs(signs.mean().item()) > 0.99
    gauss = factories.build_toy(_cfg(regs, "datasets", "eight_gaussians", radius=3.0, std=0.01))
    assert gauss.params == {"radius": 3.0, "std": 0.01} and gauss.sigma_d == 0.5


def test_build_digits(regs):
    data = factories.build_digits(_cfg(regs, "datasets", "digits", size=16, conditional=True), 0.5)
    assert data.shape == (1, 16, 16) and data.num_classes == 10 and len(data) == 1797
    assert factories.build_digits(_cfg(regs, "datasets", "digits")).num_classes is None


def test_build_image_folder_passes_size_and_channels(regs, tmp_path):
    from fewstep.testing.fixtures import image_folder

    root = image_folder(tmp_path / "imgs", classes=2, per_class=3)
    data = factories.build_image_folder(_cfg(regs, "datasets", "image_folder", root=str(root), size=6, channels=1,
                                             conditional=True), 0.5)
    assert data.shape == (1, 6, 6) and data.num_classes == 2 and len(data) == 6


def test_build_latents_reads_the_folder_with_the_configured_statistics(regs, tmp_path):
    from fewstep.testing.fixtures import encoded_latents

    root = encoded_latents(tmp_path, n=16)
    cfg = _cfg(regs, "datasets", "latents", root=str(root), channel_mean=[0.0] * 4, channel_std=[2.0] * 4)
    data = factories.build_latents(cfg, 0.5)
    assert data.shape == (4, 8, 8) and len(data) == 16 and data.num_classes is None
    assert data.mu.flatten().tolist() == [0.0] * 4 and data.sd.flatten().tolist() == [2.0] * 4


def test_build_cifar10_without_the_files_and_without_download_is_a_missing_resource(regs, tmp_path):
    cfg = _cfg(regs, "datasets", "cifar10", root=str(tmp_path), download=False)
    with pytest.raises(MissingResource, match="download is off"):
        factories.build_cifar10(cfg, 0.5)


# --- point metrics -------------------------------------------------------------------------------
X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
Y = torch.tensor([[1.0, 1.0], [3.0, 0.0]], dtype=torch.float64)


def _mean_dist(a, b):
    return sum(math.dist(p, q) for p in a.tolist() for q in b.tolist()) / (len(a) * len(b))


def test_energy_metric_is_the_energy_distance(regs):
    metric = factories.build_energy_distance(_cfg(regs, "metrics", "energy"))
    assert metric.kind == "points" and metric.name == "energy"
    want = 2 * _mean_dist(X, Y) - _mean_dist(X, X) - _mean_dist(Y, Y)
    value = metric(X, Y)
    assert isinstance(value, float) and value == pytest.approx(want, rel=1e-5)


def test_mmd_metric_uses_the_configured_bandwidths(regs):
    metric = factories.build_mmd(_cfg(regs, "metrics", "mmd", bandwidths=[0.5, 2.0]))

    def k(a, b):
        return sum(math.exp(-math.dist(p, q) ** 2 / (2 * h * h)) for p in a.tolist() for q in b.tolist()
                   for h in (0.5, 2.0)) / (2 * len(a) * len(b))

    assert metric(X, Y) == pytest.approx(k(X, X) + k(Y, Y) - 2 * k(X, Y), rel=1e-5)
    default = factories.build_mmd(_cfg(regs, "metrics", "mmd"))
    assert default._kwargs == {"bandwidths": None}  # the median heuristic


def test_sw2_metric_takes_the_callers_generator(regs):
    from fewstep.eval.toy_metrics import sliced_wasserstein2

    metric = factories.build_sw2(_cfg(regs, "metrics", "sw2", n_projections=7))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 2, generator=g), torch.randn(40, 2, generator=g) + 1
    got = metric(x, y, torch.Generator().manual_seed(11))
    want = sliced_wasserstein2(x, y, n_projections=7, generator=torch.Generator().manual_seed(11))
    assert got == want
    assert metric(x, y, torch.Generator().manual_seed(11)) == got  # the same seed, the same projections
    assert metric(x, y, torch.Generator().manual_seed(12)) != got


def test_sw2_of_a_one_dimensional_shift_is_the_shift(regs):
    metric = factories.build_sw2(_cfg(regs, "metrics", "sw2", n_projections=64))
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([0.3, 0.4], dtype=torch.float64)  # |shift| = 0.5
    # each projection moves by theta . shift; the mean of (theta . shift)^2 over the circle is |shift|^2 / 2
    value = metric(x, x + shift, torch.Generator().manual_seed(0))
    assert value == pytest.approx(0.5 / math.sqrt(2), rel=0.15)


# --- image metrics -------------------------------------------------------------------------------
@pytest.fixture
def fidelity_calls(monkeypatch):
    import fewstep.eval.fidelity

    calls = []

    def fake(x, reference, **kwargs):
        calls.append((x, reference, kwargs))
        return {"FID": 1.0}

    monkeypatch.setattr(fewstep.eval.fidelity, "fidelity", fake)
    return calls


def test_fid_metric_passes_its_settings_to_fidelity(regs, fidelity_calls):
    metric = factories.build_fid(_cfg(regs, "metrics", "fid", kid=False, isc=True, prc=True, weights="/w.pth",
                                      kid_subsets=3, device="cpu"))
    assert (metric.kind, metric.name, metric.features) == ("images", "fid", "inception")
    x, y = torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.ones(2, 3, 8, 8, dtype=torch.uint8)
    assert metric(x, y) == {"FID": 1.0}
    (_, reference, kwargs), = fidelity_calls
    assert reference is y  # reference: data, the fresh data the evaluation passes
    assert kwargs == {"features": "inception", "fid": True, "kid": False, "isc": True, "prc": True,
                      "device": "cpu", "weights": "/w.pth", "kid_subsets": 3}


def test_fid_metric_with_a_named_reference_passes_the_name(regs, fidelity_calls):
    metric = factories.build_fid(_cfg(regs, "metrics", "fid", reference="cifar10-train"))
    metric(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.ones(1, 3, 8, 8, dtype=torch.uint8))
    assert fidelity_calls[0][1] == "cifar10-train"


def test_fd_digits_metric_uses_the_digits_features(regs, fidelity_calls):
    metric = factories.build_fd_digits(_cfg(regs, "metrics", "fd_digits", kid_subsets=4))
    assert (metric.kind, metric.name, metric.features) == ("images", "fd_digits", "digits")
    y = torch.ones(1, 1, 8, 8, dtype=torch.uint8)
    metric(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), y)
    (_, reference, kwargs), = fidelity_calls
    assert reference is y
    assert kwargs == {"features": "digits", "fid": True, "kid": True, "isc": False, "prc": False, "device": "auto",
                      "weights": None, "kid_subsets": 4}
