import math

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.data.toy import GENERATORS, ToyDataset, checkerboard, eight_gaussians


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shape_dtype_and_reproducible(name):
    fn = GENERATORS[name]
    a = fn(1000, _gen(1))
    b = fn(1000, _gen(1))
    c = fn(1000, _gen(2))
    assert a.shape == (1000, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_odd_and_zero_n(name):
    assert GENERATORS[name](7, _gen(0)).shape == (7, 2)
    assert GENERATORS[name](0, _gen(0)).shape == (0, 2)


def test_generators_map_names():
    assert set(GENERATORS) == {"eight_gaussians", "checkerboard", "moons", "spiral"}


@pytest.mark.parametrize("sigma_d", [0.5, 1.0])
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_dataset_normalised(name, sigma_d):
    ds = ToyDataset(name, sigma_d=sigma_d)
    assert ds.kind == "points" and ds.shape == (2,) and ds.num_classes is None
    batch = ds.sample(20000, _gen(123))
    assert isinstance(batch, Batch) and batch.cond is None
    x = batch.x.double()
    assert batch.x.shape == (20000, 2) and batch.x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.02 * sigma_d / 0.5
    overall_std = x.var(0).mean().sqrt().item()
    assert abs(overall_std - sigma_d) < 0.02 * sigma_d / 0.5


def test_dataset_reproducible_and_params_passed():
    ds = ToyDataset("eight_gaussians", radius=3.0, std=0.2)
    assert torch.equal(ds.sample(64, _gen(5)).x, ds.sample(64, _gen(5)).x)
    with pytest.raises(TypeError):
        ToyDataset("moons", radius=1.0)


def test_eight_gaussians_cluster_at_centres():
    std, radius = 0.1, 2.0
    x = eight_gaussians(8000, _gen(3), radius=radius, std=std).double()
    k = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = radius * torch.stack([torch.cos(k), torch.sin(k)], dim=1)
    d = torch.cdist(x, centres)
    nearest = d.min(dim=1)
    assert (nearest.values < 4 * std).double().mean() > 0.995
    # Equal weights: every centre gets about 1/8 of the points.
    counts = torch.bincount(nearest.indices, minlength=8).double() / len(x)
    assert (counts - 1 / 8).abs().max() < 0.03


@pytest.mark.parametrize("squares", [2, 4, 5])
def test_checkerboard_on_black_cells(squares):
    x = checkerboard(5000, _gen(4), squares=squares)
    assert (x >= -2).all() and (x <= 2).all()
    side = 4.0 / squares
    ij = ((x + 2) / side).floor().long().clamp(0, squares - 1)
    assert ((ij[:, 0] + ij[:, 1]) % 2 == 0).all()
    # Every black cell is used.
    cells = {(int(i), int(j)) for i, j in ij}
    assert len(cells) == (squares * squares + 1) // 2


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="checkerboard"):
        ToyDataset("nope")
