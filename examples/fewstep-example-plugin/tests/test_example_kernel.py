"""The inverse multiquadric kernel: closed-form values, its relation to the RBF kernel, positive definiteness."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fewstep.kernels import RBF, mmd2
from fewstep_example import IMQConfig
from fewstep_example.kernel import IMQ, build_imq

F64 = torch.float64


def pair(sq_dist: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two one-particle groups [1, 1, dim] at squared distance ``sq_dist``."""
    a = torch.zeros(1, 1, dim, dtype=F64)
    b = torch.zeros(1, 1, dim, dtype=F64)
    b[..., 0] = sq_dist ** 0.5
    return a, b


@pytest.mark.parametrize("sq_dist, dim, w, c, beta, expected", [
    (3.0, 4, 2.0, 1.0, 0.5, 0.5),        # w^2 d^2 / (c^2 D) = 4 * 3 / 4 = 3: (1 + 3)^(-1/2)
    (12.0, 4, 2.0, 2.0, 1.0, 0.25),      # (4 / 4) * 12 / 4 = 3: (1 + 3)^(-1)
    (8.0, 2, 0.5, 1.0, 0.5, 2 ** -0.5),  # 0.25 * 8 / 2 = 1: (1 + 1)^(-1/2)
    (0.0, 7, 5.0, 0.3, 2.0, 1.0),        # k(a, a) = 1 whatever the options
])
def test_values_at_known_distances(sq_dist, dim, w, c, beta, expected):
    a, b = pair(sq_dist, dim)
    k = IMQ(c, beta)(a, b, torch.tensor([w], dtype=F64))
    assert k.shape == (1, 1, 1)
    assert k.item() == pytest.approx(expected, rel=1e-12)


def test_halves_at_c_sqrt3_bandwidth_units():
    # (1 + r^2 / c^2)^(-1/2) = 1/2 at r = c sqrt(3), r = w ||a - b|| / sqrt(D): what IMQConfig.c says
    dim, w, c = 8, 3.0, 0.7
    r = c * 3 ** 0.5
    a, b = pair((r * dim ** 0.5 / w) ** 2, dim)
    assert IMQ(c)(a, b, torch.tensor([w], dtype=F64)).item() == pytest.approx(0.5, rel=1e-12)


def test_gram_matrix_shape_symmetry_and_unit_diagonal():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 6, generator=g, dtype=F64)
    w = torch.rand(3, generator=g, dtype=F64) + 0.5
    K = IMQ(1.3, 0.7)(a, a, w)
    assert K.shape == (3, 5, 5)
    assert torch.allclose(K, K.transpose(1, 2))
    assert torch.allclose(torch.diagonal(K, dim1=1, dim2=2), torch.ones(3, 5, dtype=F64))
    assert bool(((K > 0) & (K <= 1)).all())


def test_per_group_bandwidth_is_used():
    a, b = pair(2.0, 2)
    a, b = a.expand(2, 1, 2), b.expand(2, 1, 2)
    k = IMQ()(a, b, torch.tensor([1.0, 2.0], dtype=F64))[:, 0, 0]
    assert k.tolist() == pytest.approx([(1 + 1.0) ** -0.5, (1 + 4.0) ** -0.5])


def test_second_order_agreement_with_rbf_and_heavier_tails():
    """c = 1, beta = 1/2: 1 - r^2/2 + 3 r^4/8 vs the RBF's 1 - r^2/2 + r^4/8 (r^2 = w^2 d^2 / D)."""
    w = torch.tensor([1.0], dtype=F64)
    for r2 in (1e-2, 1e-3):
        a, b = pair(2 * r2, 2)  # D = 2: r^2 = d^2 / 2
        gap = IMQ()(a, b, w) - RBF()(a, b, w)
        assert gap.item() == pytest.approx(0.25 * r2 ** 2, rel=2 * r2)  # (3/8 - 1/8) r^4 + O(r^6)
    a, b = pair(2 * 100.0, 2)  # r = 10: IMQ ~ 1/r, RBF ~ exp(-50)
    assert IMQ()(a, b, w).item() == pytest.approx(101 ** -0.5)
    assert RBF()(a, b, w).item() < 1e-20


def test_positive_definite_gram_and_mmd():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 40, 3, generator=g, dtype=F64)
    w = torch.tensor([1.5], dtype=F64)
    for beta in (0.25, 0.5, 2.0):
        eig = torch.linalg.eigvalsh(IMQ(0.8, beta)(x, x, w)[0])
        assert eig.min().item() > -1e-10
    y = torch.randn(4, 8, 3, generator=g, dtype=F64)
    w4 = torch.ones(4, dtype=F64)
    assert torch.allclose(mmd2(IMQ(), y, y, w4), torch.zeros(4, dtype=F64), atol=1e-14)
    assert bool((mmd2(IMQ(), y, y + 1.0, w4) > 0).all())


def test_gradient_at_zero_distance_is_defined():
    a = torch.zeros(1, 2, 3, dtype=F64, requires_grad=True)
    IMQ()(a, a.detach(), torch.ones(1, dtype=F64)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() == 0


def test_config_and_factory():
    assert isinstance(build_imq(IMQConfig(c=2.0, beta=1.0)), IMQ)
    assert repr(build_imq(IMQConfig())) == "IMQ(c=1.0, beta=0.5)"
    for bad in ({"c": 0.0}, {"beta": -1.0}, {"gamma": 1.0}):
        with pytest.raises(ValidationError):
            IMQConfig(**bad)
