"""Kernels over groups of particles: Gram matrices for tensors shaped [G, M, D].

A kernel is called as ``kernel(a, b, w)`` with a, b of shape [G, M, D] (G groups of M particles
of D elements) and a per-group bandwidth w of shape [G]; it returns the [G, M, M] matrix
k(a_i, b_j) within each group. Distances are exact (differences, not |a|^2 + |b|^2 - 2ab, which
cancels badly when particles are close) and floored so the gradient at zero distance is defined.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def pairwise_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 within each group: [G, M, D] x [G, N, D] -> [G, M, N]."""
    diff = a.unsqueeze(2) - b.unsqueeze(1)
    return diff.pow(2).sum(-1)


class Kernel:
    """Base class. Subclasses implement :meth:`__call__`."""

    name = "kernel"

    def __call__(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Laplace(Kernel):
    """k(a, b) = exp(-w max(||a - b||_2, eps) / D) (IMM §4.2, App. C.8).

    The distance is divided by D (the number of elements), not sqrt(D); the gradient of the
    exponent has unit-vector direction ("self-normalised").
    """

    name = "laplace"

    def __init__(self, eps: float = 1e-8):
        self.eps = float(eps)

    def __call__(self, a, b, w):
        d = pairwise_sq_dist(a, b).clamp_min(self.eps**2).sqrt()
        return torch.exp(-w.reshape(-1, 1, 1) * d / a.shape[-1])


class RBF(Kernel):
    """Gaussian kernel k(a, b) = exp(-w^2 ||a - b||^2 / (2 D)) (IMM App. C.8, the ablated alternative)."""

    name = "rbf"

    def __call__(self, a, b, w):
        w2 = w.reshape(-1, 1, 1) ** 2
        return torch.exp(-w2 * pairwise_sq_dist(a, b) / (2 * a.shape[-1]))


class Energy(Kernel):
    """k(a, b) = -w^2 ||a - b||^2 / D: matches the first moment only; IMM with M = 1 and this kernel is
    consistency training with an L2 loss (IMM Lemma 1, App. G.1)."""

    name = "energy"

    def __call__(self, a, b, w):
        return -(w.reshape(-1, 1, 1) ** 2) * pairwise_sq_dist(a, b) / a.shape[-1]


class SmoothLaplace(Kernel):
    """k(a, b) = exp(-(sqrt((w ||a - b||)^2 + delta^2) - delta) / D): Laplace's exponent with a pseudo-Huber
    distance (Charbonnier 1994; the form iCT's loss uses, Song & Dhariwal 2023 §3.3). Far apart (w d >> delta)
    it is Laplace up to a factor exp(delta / D); near zero (w d << delta) the exponent is (w d)^2 / (2 delta D),
    quadratic like the RBF kernel's.

    Why (docs/imm.md §11): at IMM's small gaps w~ = 1/(sigma_d (t - s)) is so large that the cross terms
    between different particles vanish and only the paired term k(y_j, y~_j) is left. Under Laplace that term
    behaves like an unsquared distance, whose minimiser is a median of the target; a quadratic term's is its
    mean, which the flow map must follow. delta sets where the switch happens, in units of the scaled
    distance w d; delta -> 0 gives Laplace."""

    name = "smooth_laplace"

    def __init__(self, delta: float = 1.0):
        self.delta = float(delta)

    def __call__(self, a, b, w):
        wd2 = w.reshape(-1, 1, 1) ** 2 * pairwise_sq_dist(a, b)
        return torch.exp(-((wd2 + self.delta**2).sqrt() - self.delta) / a.shape[-1])


def mmd2(kernel: Kernel, y: Tensor, y_tilde: Tensor, w: Tensor) -> Tensor:
    """Biased (V-statistic) squared MMD per group, diagonals and all M^2 cross pairs included.

    MMD^2_i = (1/M^2) sum_{j,l} [k(y_j, y_l) + k(y~_j, y~_l) - 2 k(y_j, y~_l)]  (IMM Eq. 67).
    y, y_tilde: [G, M, D]; w: [G]; returns [G].
    """
    kxx = kernel(y, y, w)
    kyy = kernel(y_tilde, y_tilde, w)
    kxy = kernel(y, y_tilde, w)
    return (kxx + kyy - 2 * kxy).mean(dim=(1, 2))


def build_laplace(cfg) -> Laplace:
    return Laplace(cfg.eps)


def build_smooth_laplace(cfg) -> SmoothLaplace:
    return SmoothLaplace(cfg.delta)


def build_rbf(cfg) -> RBF:
    return RBF()


def build_energy(cfg) -> Energy:
    return Energy()
