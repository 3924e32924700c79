"""Kernels on particle groups [G, M, D] and the biased MMD^2 estimator (research/imm.md §4.5-4.6, §8)."""
import math

import pytest
import torch

from fewstep.kernels import RBF, Energy, Laplace, mmd2, pairwise_sq_dist

D64 = torch.float64
KERNELS = [Laplace(), RBF(), Energy()]
KIDS = ["laplace", "rbf", "energy"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _particles(g=3, m=4, d=5, seed=0, dtype=D64):
    gen = _gen(seed)
    return torch.randn(g, m, d, generator=gen, dtype=dtype), torch.randn(g, m, d, generator=gen, dtype=dtype)


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
@pytest.mark.parametrize("g,m,d", [(3, 4, 5), (1, 1, 2), (2, 6, 48)])
def test_shape(kernel, g, m, d):
    a, b = _particles(g, m, d)
    w = torch.rand(g, generator=_gen(1), dtype=D64) + 0.5
    out = kernel(a, b, w)
    assert out.shape == (g, m, m)
    assert out.dtype == D64
    assert torch.isfinite(out).all()


def test_pairwise_sq_dist_unequal_sizes():
    gen = _gen(2)
    a, b = torch.randn(2, 3, 4, generator=gen, dtype=D64), torch.randn(2, 5, 4, generator=gen, dtype=D64)
    d = pairwise_sq_dist(a, b)
    assert d.shape == (2, 3, 5)
    torch.testing.assert_close(d, torch.cdist(a, b) ** 2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_gram_diagonals(dtype):
    a, _ = _particles(dtype=dtype)
    w = torch.tensor([0.5, 3.0, 200.0], dtype=dtype)
    lap, rbf, en = Laplace()(a, a, w), RBF()(a, a, w), Energy()(a, a, w)
    # Laplace: exp(-w eps / D) with the 1e-8 floor, ~1 within 1e-6
    assert torch.allclose(torch.diagonal(lap, dim1=1, dim2=2), torch.ones(3, 4, dtype=dtype), rtol=0, atol=1e-6)
    assert (torch.diagonal(rbf, dim1=1, dim2=2) == 1).all()
    assert (torch.diagonal(en, dim1=1, dim2=2) == 0).all()
    # off the diagonal the kernels are genuinely below their maximum
    off = ~torch.eye(4, dtype=torch.bool).expand(3, 4, 4)
    assert (lap[off] < 1).all() and (rbf[off] < 1).all() and (en[off] < 0).all()


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
def test_symmetry(kernel):
    a, b = _particles(seed=3)
    w = torch.tensor([0.7, 1.9, 4.0], dtype=D64)
    torch.testing.assert_close(kernel(a, b, w).transpose(1, 2), kernel(b, a, w), rtol=1e-12, atol=1e-14)
    kaa = kernel(a, a, w)
    torch.testing.assert_close(kaa, kaa.transpose(1, 2), rtol=1e-12, atol=1e-14)


def _by_hand(kind, a, b, w):
    """Loops over plain Python floats: the closed forms of the three kernels."""
    G, M, D = len(a), len(a[0]), len(a[0][0])
    out = [[[0.0] * M for _ in range(M)] for _ in range(G)]
    for g in range(G):
        for i in range(M):
            for j in range(M):
                sq = sum((a[g][i][k] - b[g][j][k]) ** 2 for k in range(D))
                wg = w[g]
                if kind == "laplace":
                    out[g][i][j] = math.exp(-wg * max(math.sqrt(sq), 1e-8) / D)
                elif kind == "rbf":
                    out[g][i][j] = math.exp(-wg**2 * sq / (2 * D))
                else:
                    out[g][i][j] = -wg**2 * sq / D
    return torch.tensor(out, dtype=D64)


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
def test_values_against_closed_form(kernel):
    # two groups, three particles of D = 2, different bandwidths per group
    a = [[[0.0, 0.0], [3.0, 4.0], [1.0, -1.0]],
         [[0.5, 0.5], [-2.0, 1.0], [0.0, 2.0]]]
    b = [[[0.0, 0.0], [0.0, 4.0], [-1.0, 1.0]],
         [[1.5, 0.5], [2.0, -1.0], [0.5, 0.0]]]
    w = [1.5, 0.25]
    ta, tb, tw = torch.tensor(a, dtype=D64), torch.tensor(b, dtype=D64), torch.tensor(w, dtype=D64)
    expected = _by_hand(kernel.name, a, b, w)
    torch.testing.assert_close(kernel(ta, tb, tw), expected, rtol=1e-12, atol=1e-14)


def test_laplace_handworked_entry():
    """||(3,4) - (0,0)|| = 5, D = 2, w = 1.5: k = exp(-3.75); RBF exp(-1.5^2 * 25 / 4); Energy -1.5^2*25/2."""
    a = torch.tensor([[[3.0, 4.0]]], dtype=D64)
    b = torch.zeros(1, 1, 2, dtype=D64)
    w = torch.tensor([1.5], dtype=D64)
    assert Laplace()(a, b, w).item() == pytest.approx(math.exp(-3.75), rel=1e-12)
    assert RBF()(a, b, w).item() == pytest.approx(math.exp(-2.25 * 25 / 4), rel=1e-12)
    assert Energy()(a, b, w).item() == pytest.approx(-2.25 * 25 / 2, rel=1e-12)


def test_laplace_divides_by_D_not_sqrt_D():
    d = 64
    a = torch.zeros(1, 1, d, dtype=D64)
    b = torch.ones(1, 1, d, dtype=D64)  # distance sqrt(64) = 8
    w = torch.tensor([2.0], dtype=D64)
    assert Laplace()(a, b, w).item() == pytest.approx(math.exp(-2.0 * 8 / 64), rel=1e-12)


def test_laplace_gradient_finite_when_particles_coincide():
    y = torch.tensor([[[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1.0, 0.0, -1.0]]], dtype=D64, requires_grad=True)
    y_tilde = torch.tensor([[[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.0, 0.0, -1.0]]], dtype=D64)
    w = torch.tensor([3.0], dtype=D64)
    loss = mmd2(Laplace(), y, y_tilde, w).sum() + Laplace()(y, y, w).sum()
    loss.backward()
    assert torch.isfinite(y.grad).all()
    assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", [Laplace(), RBF()], ids=["laplace", "rbf"])
def test_mmd2_zero_for_identical_sets_and_positive_otherwise(kernel):
    y, y_tilde = _particles(g=4, m=4, d=3, seed=5)
    w = torch.tensor([0.5, 1.0, 2.0, 8.0], dtype=D64)
    same = mmd2(kernel, y, y.clone(), w)
    assert same.shape == (4,)
    torch.testing.assert_close(same, torch.zeros(4, dtype=D64), rtol=0, atol=1e-12)
    # a permutation of the same particles is the same empirical distribution
    perm = mmd2(kernel, y, y[:, torch.tensor([2, 0, 3, 1])], w)
    torch.testing.assert_close(perm, torch.zeros(4, dtype=D64), rtol=0, atol=1e-12)
    diff = mmd2(kernel, y, y_tilde, w)
    assert (diff > 0).all()


@pytest.mark.parametrize("kernel", [Laplace(), RBF()], ids=["laplace", "rbf"])
def test_mmd2_matches_explicit_v_statistic(kernel):
    y, y_tilde = _particles(g=2, m=3, d=4, seed=6)
    w = torch.tensor([0.8, 2.5], dtype=D64)
    got = mmd2(kernel, y, y_tilde, w)
    for gi in range(2):
        tot = 0.0
        for j in range(3):
            for m in range(3):
                yy = kernel(y[gi:gi + 1, j:j + 1], y[gi:gi + 1, m:m + 1], w[gi:gi + 1]).item()
                tt = kernel(y_tilde[gi:gi + 1, j:j + 1], y_tilde[gi:gi + 1, m:m + 1], w[gi:gi + 1]).item()
                yt = kernel(y[gi:gi + 1, j:j + 1], y_tilde[gi:gi + 1, m:m + 1], w[gi:gi + 1]).item()
                tot += yy + tt - 2 * yt
        assert got[gi].item() == pytest.approx(tot / 9, rel=1e-10, abs=1e-14)


def test_mmd2_energy_single_particle_is_scaled_l2():
    """M = 1 with the energy kernel: 2 w^2 ||y - y~||^2 / D (IMM Lemma 1: CT with an L2 loss)."""
    y, y_tilde = _particles(g=5, m=1, d=7, seed=7)
    w = torch.tensor([0.3, 1.0, 2.0, 5.0, 11.0], dtype=D64)
    expected = 2 * w**2 * (y - y_tilde).pow(2).sum(dim=(1, 2)) / 7
    torch.testing.assert_close(mmd2(Energy(), y, y_tilde, w), expected, rtol=1e-12, atol=1e-14)


def test_mmd2_gradient_flows_through_y_only_arguments():
    y, y_tilde = _particles(g=2, m=4, d=3, seed=8)
    y.requires_grad_(True)
    w = torch.tensor([1.0, 2.0], dtype=D64)
    mmd2(Laplace(), y, y_tilde, w).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert y_tilde.grad is None


def test_smooth_laplace_in_closed_form_and_its_two_limits():
    """exp(-(sqrt((w d)^2 + delta^2) - delta) / D), d = ||a - b||: one entry by hand; far apart it is Laplace
    times exp(delta / D); near zero log k = -(w d)^2 / (2 delta D) (quadratic, as RBF's with w^2 / delta)."""
    from fewstep.kernels import SmoothLaplace

    a = torch.tensor([[[0.0, 0.0, 0.0]]], dtype=D64)
    b = torch.tensor([[[1.0, 2.0, 2.0]]], dtype=D64)  # d = 3
    w = torch.tensor([2.0], dtype=D64)
    assert SmoothLaplace(0.5)(a, b, w).item() == pytest.approx(math.exp(-(math.sqrt(36 + 0.25) - 0.5) / 3))
    far = torch.tensor([200.0], dtype=D64)  # w d = 600 >> delta
    ratio = SmoothLaplace(0.5)(a, b, far) / Laplace()(a, b, far)
    assert ratio.item() == pytest.approx(math.exp(0.5 / 3), rel=1e-4)
    near = torch.tensor([1e-4], dtype=D64)
    assert torch.log(SmoothLaplace(0.5)(a, b, near)).item() == pytest.approx(-(3e-4) ** 2 / (2 * 0.5 * 3), rel=1e-6)
    assert SmoothLaplace(1e-12)(a, b, w).item() == pytest.approx(Laplace()(a, b, w).item(), rel=1e-9)
