import math

import pytest
import torch

from fewstep.eval.toy_metrics import energy_distance, mmd_rbf, sliced_wasserstein2

METRICS = [sliced_wasserstein2, mmd_rbf, energy_distance]


def _normal(n: int, seed: int, shift=(0.0, 0.0)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor(shift)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_sets_zero(metric):
    x = _normal(500, 0).float()
    v = metric(x, x.clone())
    assert isinstance(v, float)
    assert abs(v) < 1e-6


@pytest.mark.parametrize("metric", METRICS)
def test_monotone_in_shift(metric):
    x = _normal(600, 1)
    vals = [metric(x, _normal(600, 2, shift=(s, 0.0))) for s in (0.25, 1.0, 3.0)]
    assert vals[0] < vals[1] < vals[2]


@pytest.mark.parametrize("metric", METRICS)
def test_unequal_sizes(metric):
    x = _normal(300, 3)
    y = _normal(700, 4)
    far = _normal(700, 4, shift=(2.0, 0.0))
    v_near, v_far = metric(x, y), metric(x, far)
    assert math.isfinite(v_near) and math.isfinite(v_far)
    assert v_near < v_far
    # Symmetric in its arguments (up to float32 / direction sampling details).
    assert metric(y, x) == pytest.approx(v_near, rel=1e-4, abs=1e-6)


def test_sw2_gaussian_shift_closed_form():
    # W2^2 between N(0, 1) and N(theta.mu, 1) is (theta.mu)^2; its average over unit directions
    # in 2D is ||mu||^2 / 2.
    mu = (1.5, -1.0)
    x = _normal(4000, 5)
    y = _normal(4000, 6, shift=mu)
    sw2_sq = sliced_wasserstein2(x, y) ** 2
    expected = (mu[0] ** 2 + mu[1] ** 2) / 2
    assert sw2_sq == pytest.approx(expected, rel=0.1)


def test_sw2_deterministic_and_generator():
    x, y = _normal(200, 7), _normal(200, 8, shift=(0.5, 0.5))
    assert sliced_wasserstein2(x, y) == sliced_wasserstein2(x, y)
    g1 = torch.Generator().manual_seed(11)
    g2 = torch.Generator().manual_seed(11)
    assert sliced_wasserstein2(x, y, generator=g1) == sliced_wasserstein2(x, y, generator=g2)


def test_sw2_unequal_sizes_point_masses():
    # Point masses: every projection is a constant, so SW2^2 = mean_theta (theta.(a-b))^2.
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    v = sliced_wasserstein2(a.repeat(5, 1), b.repeat(9, 1), n_projections=4096)
    assert v**2 == pytest.approx(0.5, rel=0.05)


def test_energy_distance_point_masses():
    a = torch.tensor([1.0, 2.0])
    b = torch.tensor([-2.0, 6.0])
    v = energy_distance(a.repeat(10, 1), b.repeat(7, 1))
    assert v == pytest.approx(2 * torch.linalg.norm(a - b).item(), rel=1e-6)


def test_mmd_point_masses():
    a = torch.tensor([0.5, -0.5])
    b = torch.tensor([1.0, 0.0])
    h = 0.7
    v = mmd_rbf(a.repeat(10, 1), b.repeat(7, 1), bandwidths=[h])
    d2 = torch.sum((a - b) ** 2).item()
    assert v == pytest.approx(2 - 2 * math.exp(-d2 / (2 * h * h)), rel=1e-5)
    # Several bandwidths: the average of the single-bandwidth values.
    hs = [0.3, 0.7, 2.0]
    many = mmd_rbf(a.repeat(10, 1), b.repeat(7, 1), bandwidths=hs)
    expected = sum(2 - 2 * math.exp(-d2 / (2 * s * s)) for s in hs) / len(hs)
    assert many == pytest.approx(expected, rel=1e-5)


def test_mmd_matches_dense_float64_reference():
    x, y = _normal(300, 9), _normal(250, 10, shift=(0.3, 0.0))
    hs = [0.5, 1.0]

    def k(a, b, h):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h)).mean()

    ref = sum(k(x, x, h) + k(y, y, h) - 2 * k(x, y, h) for h in hs) / len(hs)
    assert mmd_rbf(x, y, bandwidths=hs) == pytest.approx(ref.item(), rel=1e-4)
    ed_ref = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(ed_ref.item(), rel=1e-4)


def test_bad_inputs():
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError):
        mmd_rbf(torch.zeros(3, 2), torch.zeros(3, 2), bandwidths=[0.0])
