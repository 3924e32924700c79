"""Sample-based distances between two point sets (for 2D toy data, but any dimension ``D`` works).

All functions take ``x: Tensor[n, D]`` and ``y: Tensor[m, D]`` and return a Python float; lower is
better and two identical sets give 0 (up to rounding). Inputs are moved to CPU float64.

Precision, memory and speed: the sliced Wasserstein distance is computed in float64 throughout.
MMD and the energy distance need all ``n*n + m*m + n*m`` pairs, so they evaluate per-pair values
(distances, kernel values) in float32, on data centred on the pooled mean (which keeps the
``|a|^2 + |b|^2 - 2 a.b`` form accurate), in row blocks of at most ``_BLOCK_ELEMS`` = 262144
pairs (1 MB per float32 temporary: cache-sized blocks ran faster than larger ones); each row is
summed in float32 and the row sums are accumulated in float64, and only the upper triangle of the
symmetric ``x``-``x`` and ``y``-``y`` blocks is evaluated. The per-pair relative error is about
1e-7, far below the sampling noise of either statistic; memory stays at a few MB beyond the
inputs, and ``n = m = 8192`` takes well under a second on two CPU cores.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["energy_distance", "mmd_rbf", "sliced_wasserstein2"]

_BLOCK_ELEMS = 1 << 18  # pairs per block in the pairwise reductions (1 MB float32: stays in cache)
_MEDIAN_MAX_POINTS = 2000
_MEDIAN_SEED = 0
_DEFAULT_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)


def _as_points(t: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().to(device="cpu", dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be [n, D], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return t


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def _quantiles(sorted_vals: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the empirical quantile function of each column.

    ``sorted_vals`` is ``[P, n]`` sorted along dim 1; the ``i``-th order statistic sits at level
    ``(i + 0.5) / n``; levels outside ``[0.5/n, 1 - 0.5/n]`` take the extreme values.
    Returns ``[P, K]`` for ``K`` levels.
    """
    n = sorted_vals.shape[1]
    pos = (levels * n - 0.5).clamp(0.0, n - 1.0)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo.to(pos.dtype)
    return sorted_vals[:, lo] * (1.0 - frac) + sorted_vals[:, hi] * frac


def sliced_wasserstein2(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_projections: int = 512,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance between two empirical distributions.

    ``SW2 = sqrt( mean_theta W2^2(theta . X, theta . Y) )`` over ``n_projections`` directions
    ``theta`` drawn uniformly on the unit sphere (normalised Gaussians). For 1-D projections,
    ``W2^2 = int_0^1 (F^-1(q) - G^-1(q))^2 dq``: with equal sizes this is the mean squared
    difference of the sorted projections; with unequal sizes both empirical quantile functions are
    interpolated linearly at the levels ``(i + 0.5) / K``, ``K = max(n, m)``.

    Reference: Bonneel, Rabin, Peyre & Pfister (2015), "Sliced and Radon Wasserstein barycenters
    of measures", J. Math. Imaging Vis. 51(1):22-45.

    Parameters
    ----------
    x, y : torch.Tensor
        ``[n, D]`` and ``[m, D]`` samples.
    n_projections : int
        Number of random directions.
    generator : torch.Generator, optional
        Draws the directions (CPU); ``None`` uses a fresh generator seeded with 0, so the value
        is deterministic.

    Returns
    -------
    float
        The SW2 distance (same units as the data).
    """
    x, y = _check_pair(x, y)
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    d = x.shape[1]
    theta = torch.randn(d, n_projections, generator=generator, device=generator.device)
    theta = theta.to(device="cpu", dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True).clamp_min(1e-12)
    # Projections laid out [P, n] so each sort runs along contiguous memory (much faster).
    px = torch.sort(theta.T @ x.T, dim=1).values  # [P, n]
    py = torch.sort(theta.T @ y.T, dim=1).values  # [P, m]
    n, m = px.shape[1], py.shape[1]
    if n != m:
        k = max(n, m)
        levels = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        px = _quantiles(px, levels)
        py = _quantiles(py, levels)
    sw2_sq = (px - py).square().mean()
    return float(sw2_sq.clamp_min(0.0).sqrt())


def _pairwise_sums(
    a: torch.Tensor,
    b: torch.Tensor | None,
    block_fn: Callable[[torch.Tensor, torch.Tensor, bool], list[torch.Tensor]],
) -> torch.Tensor:
    """Sums over all pairs ``(i, j)`` of the per-pair values that ``block_fn`` returns.

    ``block_fn(a_blk [r, D], b_blk [c, D], starts_on_diagonal)`` returns a list of ``S`` value
    tensors ``[r, c]`` (float32); ``starts_on_diagonal`` says that ``a_blk[i]`` and ``b_blk[i]``
    are the same point. The result is a float64 tensor ``[S]`` of their sums over every pair. With
    ``b=None`` the pairs are ``a`` with itself: only the block upper triangle is evaluated and
    off-diagonal blocks are counted twice (the values must be symmetric in ``i, j``). Row blocks
    keep at most ``_BLOCK_ELEMS`` pairs (at least one row); each row is summed in float32 and the
    row sums are accumulated in float64.
    """
    same = b is None
    if same:
        b = a
    n, m = a.shape[0], b.shape[0]
    rows = max(1, _BLOCK_ELEMS // max(1, m))
    total = None
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        r = stop - start
        if same:
            vals = block_fn(a[start:stop], b[start:], True)
            sums = [
                v[:, :r].sum(dim=1).double().sum() + 2.0 * v[:, r:].sum(dim=1).double().sum()
                for v in vals
            ]
        else:
            vals = block_fn(a[start:stop], b, False)
            sums = [v.sum(dim=1).double().sum() for v in vals]
        s = torch.stack(sums)
        total = s if total is None else total + s
    return total


def _centred_float32(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both samples shifted by the pooled mean (distances are unchanged) and cast to float32."""
    centre = torch.cat([x, y], dim=0).mean(dim=0)
    return (x - centre).to(torch.float32), (y - centre).to(torch.float32)


def _sq_dists(a: torch.Tensor, b: torch.Tensor, starts_on_diagonal: bool) -> torch.Tensor:
    """Squared distances ``[r, c]`` via ``|a|^2 + |b|^2 - 2 a.b`` (one matmul), clamped at 0.

    When ``starts_on_diagonal``, entry ``(i, i)`` pairs a point with itself and is set to 0.
    """
    d2 = torch.addmm(b.square().sum(dim=1)[None, :], a, b.T, alpha=-2.0)
    d2.add_(a.square().sum(dim=1)[:, None]).clamp_min_(0.0)
    if starts_on_diagonal:
        d2[:, : a.shape[0]].diagonal().zero_()
    return d2


def _dists(a: torch.Tensor, b: torch.Tensor, starts_on_diagonal: bool) -> torch.Tensor:
    """Euclidean distances ``[r, c]``; coordinate differences (no matmul) in low dimension.

    The matmul form loses precision for near-duplicate points (``sqrt`` of a rounding error),
    which matters for the energy distance; for ``D <= 16`` direct differences are cheap.
    """
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 16 else "use_mm_for_euclid_dist"
    d = torch.cdist(a, b, compute_mode=mode)
    if starts_on_diagonal:
        d[:, : a.shape[0]].diagonal().zero_()
    return d


def _median_distance(pooled: torch.Tensor) -> float:
    """Median (the lower one for an even count) of the distances ``i < j`` of at most 2000 points.

    A subset, when needed, is drawn with a fixed seed so the value is deterministic.
    """
    if pooled.shape[0] > _MEDIAN_MAX_POINTS:
        g = torch.Generator().manual_seed(_MEDIAN_SEED)
        idx = torch.rand(pooled.shape[0], generator=g).argsort()[:_MEDIAN_MAX_POINTS]
        pooled = pooled[idx]
    if pooled.shape[0] < 2:
        return 0.0
    dist = torch.cdist(pooled, pooled)
    iu = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
    return float(dist[iu[0], iu[1]].median())


def mmd_rbf(
    x: torch.Tensor, y: torch.Tensor, *, bandwidths: Sequence[float] | None = None
) -> float:
    """Squared maximum mean discrepancy with Gaussian kernels (biased V-statistic).

    ``MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)`` (diagonals
    included), with ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``, averaged over the bandwidths ``h``.
    ``bandwidths=None`` uses the median heuristic: ``h = med * (0.5, 1, 2)`` where ``med`` is the
    median pairwise distance of the pooled sample (a fixed-seed subset of at most 2000 points);
    if ``med`` is 0 (all points equal), ``med = 1``. Kernel values are computed in float32 on
    the pooled-mean-centred data, in row blocks, and accumulated in float64 (see the module notes).

    Reference: Gretton, Borgwardt, Rasch, Schoelkopf & Smola (2012), "A kernel two-sample test",
    JMLR 13:723-773 (the biased estimate ``MMD_b^2``).

    Parameters
    ----------
    x, y : torch.Tensor
        ``[n, D]`` and ``[m, D]`` samples.
    bandwidths : sequence of float, optional
        Kernel bandwidths ``h`` (> 0).

    Returns
    -------
    float
        The squared MMD (>= 0 up to rounding).
    """
    x, y = _check_pair(x, y)
    if bandwidths is None:
        med = _median_distance(torch.cat([x, y], dim=0))
        if not med > 0:
            med = 1.0
        hs = [med * f for f in _DEFAULT_BANDWIDTH_FACTORS]
    else:
        hs = [float(h) for h in bandwidths]
        if not hs or any(not h > 0 for h in hs):
            raise ValueError(f"bandwidths must be non-empty and positive, got {bandwidths!r}")
    neg_gammas = [-1.0 / (2.0 * h * h) for h in hs]

    def kernels(a: torch.Tensor, b: torch.Tensor, diag: bool) -> list[torch.Tensor]:
        d2 = _sq_dists(a, b, diag)
        out = [torch.mul(d2, g).exp_() for g in neg_gammas[:-1]]
        return out + [d2.mul_(neg_gammas[-1]).exp_()]  # the last one reuses d2's memory

    n, m = x.shape[0], y.shape[0]
    xc, yc = _centred_float32(x, y)
    kxx = _pairwise_sums(xc, None, kernels) / (n * n)
    kyy = _pairwise_sums(yc, None, kernels) / (m * m)
    kxy = _pairwise_sums(xc, yc, kernels) / (n * m)
    return float((kxx + kyy - 2.0 * kxy).mean())


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance between two samples (V-statistic form).

    ``E = 2 mean_ij ||x_i - y_j|| - mean_ij ||x_i - x_j|| - mean_ij ||y_i - y_j||`` (diagonal
    zeros included). This is the squared-distance-like quantity ``D^2(F, G)`` of the reference,
    not its square root. Distances are computed in float32 (from coordinate differences, for
    ``D <= 16``) on the pooled-mean-centred data, in row blocks, and accumulated in float64 (see
    the module notes).

    Reference: Szekely & Rizzo (2013), "Energy statistics: A class of statistics based on
    distances", J. Stat. Plan. Inference 143(8):1249-1272.

    Parameters
    ----------
    x, y : torch.Tensor
        ``[n, D]`` and ``[m, D]`` samples.

    Returns
    -------
    float
        The energy distance (>= 0 up to rounding).
    """
    x, y = _check_pair(x, y)
    n, m = x.shape[0], y.shape[0]

    def dists(a: torch.Tensor, b: torch.Tensor, diag: bool) -> list[torch.Tensor]:
        return [_dists(a, b, diag)]

    xc, yc = _centred_float32(x, y)
    exy = _pairwise_sums(xc, yc, dists)[0] / (n * m)
    exx = _pairwise_sums(xc, None, dists)[0] / (n * n)
    eyy = _pairwise_sums(yc, None, dists)[0] / (m * m)
    return float(2.0 * exy - exx - eyy)
