"""The Monte-Carlo posterior (fewstep/eval/posterior.py) against closed forms: the Gaussian posterior mean,
and geometric medians known exactly or found by brute force."""
import torch

from fewstep.eval.posterior import geometric_median, posterior_weights


def test_posterior_mean_of_gaussian_data_is_the_linear_shrinkage():
    """x ~ N(0, s^2 I), x_t = a x + sig eps: E[x | x_t] = a s^2 x_t / (a^2 s^2 + sig^2), here by 200k samples."""
    g = torch.Generator().manual_seed(0)
    s, a, sig = 0.5, 0.6, 0.4
    data = s * torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    x_t = torch.tensor([[0.3, -0.2], [0.0, 0.5], [-0.4, -0.4]], dtype=torch.float64)
    w = posterior_weights(x_t, data, a, sig)
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    exact = a * s**2 * x_t / (a**2 * s**2 + sig**2)
    assert torch.allclose(w @ data, exact, atol=5e-3)


def test_posterior_concentrates_on_the_nearest_point_as_sigma_vanishes():
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    w = posterior_weights(torch.tensor([[0.45, 0.9]], dtype=torch.float64) * 0.5, data, 0.5, 1e-3)
    assert torch.allclose(w, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))


def test_geometric_median_of_symmetric_and_collinear_sets():
    square = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    line = torch.tensor([[0.0, 0.0], [0.2, 0.0], [5.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(geometric_median(square, torch.full((1, 4), 0.25, dtype=torch.float64)),
                          torch.zeros(1, 2, dtype=torch.float64), atol=1e-8)
    # three collinear points: the middle one, whereas the mean (1.73, 0) is pulled by the outlier
    assert torch.allclose(geometric_median(line, torch.full((1, 3), 1 / 3, dtype=torch.float64)),
                          torch.tensor([[0.2, 0.0]], dtype=torch.float64), atol=1e-6)


def test_a_point_with_half_the_weight_or_more_is_the_median():
    x = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]], dtype=torch.float64)
    w = torch.tensor([[0.6, 0.2, 0.2]], dtype=torch.float64)
    assert torch.allclose(geometric_median(x, w), x[:1], atol=1e-6)


def test_geometric_median_minimises_the_weighted_sum_of_distances_found_by_grid_search():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, generator=g, dtype=torch.float64)
    w = torch.rand(2, 7, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True)
    m = geometric_median(x, w)
    axis = torch.linspace(-3, 3, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # spacing 0.01
    cost = w @ torch.cdist(x, grid)  # [2, grid]
    best = grid[cost.argmin(1)]
    assert (m - best).norm(dim=1).max() < 0.015
    own = (w * torch.cdist(m, x)).sum(1)
    assert torch.all(own <= cost.min(1).values + 1e-12)
