"""2D toy distributions, sampled on the fly from a ``torch.Generator``.

Every raw generator has the signature ``fn(n, generator, **params) -> Tensor[n, 2]`` (float32,
on the generator's device) and draws its randomness only through ``torch.randn`` / ``torch.rand`` /
``torch.randint`` with that generator, so a seeded generator reproduces the same points.
:class:`ToyDataset` wraps one of them, centred and scaled to an overall std of ``sigma_d``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from fewstep.data.base import Batch

__all__ = [
    "GENERATORS",
    "ToyDataset",
    "checkerboard",
    "eight_gaussians",
    "spiral",
    "two_moons",
]


def _check_n(n: int) -> int:
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return n


def eight_gaussians(
    n: int, generator: torch.Generator, *, radius: float = 2.0, std: float = 0.1
) -> torch.Tensor:
    """Equal-weight mixture of 8 isotropic Gaussians on a circle.

    Component ``k`` (``k = 0..7``) is ``N(radius * (cos(k pi/4), sin(k pi/4)), std^2 I)``.

    Parameters
    ----------
    n : int
        Number of points.
    generator : torch.Generator
        Source of randomness.
    radius : float
        Radius of the circle the centres lie on.
    std : float
        Per-dimension std of each component.

    Returns
    -------
    torch.Tensor
        ``[n, 2]`` float32.
    """
    n = _check_n(n)
    dev = generator.device
    k = torch.randint(0, 8, (n,), generator=generator, device=dev)
    angle = k.to(torch.float32) * (math.pi / 4)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    noise = torch.randn(n, 2, generator=generator, device=dev, dtype=torch.float32)
    return (centres + std * noise).to(torch.float32)


def checkerboard(n: int, generator: torch.Generator, *, squares: int = 4) -> torch.Tensor:
    """Uniform distribution on the black cells of a checkerboard over ``[-2, 2]^2``.

    The square is cut into ``squares x squares`` cells of side ``4 / squares``; cell ``(i, j)``
    (``i`` along x, ``j`` along y, both counted from -2) is black when ``i + j`` is even. A black
    cell is picked uniformly, then a point uniformly inside it.

    Parameters
    ----------
    n : int
        Number of points.
    generator : torch.Generator
        Source of randomness.
    squares : int
        Number of cells per side (>= 1).

    Returns
    -------
    torch.Tensor
        ``[n, 2]`` float32.
    """
    n = _check_n(n)
    squares = int(squares)
    if squares < 1:
        raise ValueError(f"squares must be >= 1, got {squares}")
    dev = generator.device
    cells = [(i, j) for i in range(squares) for j in range(squares) if (i + j) % 2 == 0]
    black = torch.tensor(cells, dtype=torch.float32, device=dev)  # [num_black, 2]
    pick = torch.randint(0, len(cells), (n,), generator=generator, device=dev)
    u = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float32)
    side = 4.0 / squares
    return (-2.0 + (black[pick] + u) * side).to(torch.float32)


def two_moons(n: int, generator: torch.Generator, *, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles ("moons"), as in scikit-learn's ``make_moons``.

    ``n // 2`` points on the inner moon ``(1 - cos a, 1 - sin a - 0.5)`` and the rest on the outer
    moon ``(cos a, sin a)``, with ``a ~ U(0, pi)``, plus ``N(0, noise^2 I)`` noise. The rows are
    shuffled so that any prefix of the output is a fair sample.

    Parameters
    ----------
    n : int
        Number of points.
    generator : torch.Generator
        Source of randomness.
    noise : float
        Std of the additive Gaussian noise.

    Returns
    -------
    torch.Tensor
        ``[n, 2]`` float32.
    """
    n = _check_n(n)
    dev = generator.device
    n_in = n // 2
    n_out = n - n_in
    a = math.pi * torch.rand(n, generator=generator, device=dev, dtype=torch.float32)
    a_out, a_in = a[:n_out], a[n_out:]
    outer = torch.stack([torch.cos(a_out), torch.sin(a_out)], dim=1)
    inner = torch.stack([1.0 - torch.cos(a_in), 1.0 - torch.sin(a_in) - 0.5], dim=1)
    pts = torch.cat([outer, inner], dim=0)
    pts = pts + noise * torch.randn(n, 2, generator=generator, device=dev, dtype=torch.float32)
    # Shuffle through torch.rand (argsort of uniforms is a uniform random permutation).
    perm = torch.rand(n, generator=generator, device=dev).argsort()
    return pts[perm].to(torch.float32)


def spiral(
    n: int, generator: torch.Generator, *, turns: float = 1.5, noise: float = 0.05
) -> torch.Tensor:
    """A 2D swiss roll (Archimedean spiral ``r = theta``).

    ``theta = sqrt(u) * turns * 2 pi`` with ``u ~ U(0, 1)``, and the point is
    ``theta * (cos theta, sin theta)`` plus Gaussian noise of std ``noise * R``, where
    ``R = turns * 2 pi`` is the spiral's outer radius: ``noise`` is relative to the spiral's size,
    so it means the same thing after normalisation whatever ``turns`` is. The ``sqrt`` makes the
    density of ``theta`` proportional to ``theta``, i.e. about uniform per unit of arc length (the
    arc element is about ``theta dtheta``) and so per unit of area swept.

    Parameters
    ----------
    n : int
        Number of points.
    generator : torch.Generator
        Source of randomness.
    turns : float
        Number of windings (> 0).
    noise : float
        Noise std as a fraction of the outer radius.

    Returns
    -------
    torch.Tensor
        ``[n, 2]`` float32.
    """
    n = _check_n(n)
    if turns <= 0:
        raise ValueError(f"turns must be > 0, got {turns}")
    dev = generator.device
    r_max = turns * 2.0 * math.pi
    u = torch.rand(n, generator=generator, device=dev, dtype=torch.float32)
    theta = torch.sqrt(u) * r_max
    pts = theta[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    eps = torch.randn(n, 2, generator=generator, device=dev, dtype=torch.float32)
    return (pts + (noise * r_max) * eps).to(torch.float32)


GENERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "moons": two_moons,
    "spiral": spiral,
}

_STATS_SAMPLES = 65536
_STATS_SEED = 0


class ToyDataset:
    """2D toy distribution sampled on the fly, centred and scaled to an overall std of sigma_d.

    The mean ``m`` (2,) and overall std ``s`` (scalar, ``sqrt`` of the mean of the two per-dim
    variances) of the raw generator are estimated once from 65536 samples drawn with
    ``torch.Generator().manual_seed(0)``; :meth:`sample` returns ``(raw - m) / s * sigma_d``.

    Parameters
    ----------
    name : str
        A key of :data:`GENERATORS`.
    sigma_d : float
        Target overall std of the data.
    **params
        Keyword parameters of the raw generator (e.g. ``radius``, ``squares``, ``noise``).
    """

    kind = "points"
    shape = (2,)
    num_classes = None

    def __init__(self, name: str, sigma_d: float = 0.5, **params) -> None:
        if name not in GENERATORS:
            known = ", ".join(sorted(GENERATORS))
            raise ValueError(f"unknown toy dataset {name!r}; known: {known}")
        if not sigma_d > 0:
            raise ValueError(f"sigma_d must be > 0, got {sigma_d}")
        self.name = name
        self.sigma_d = float(sigma_d)
        self.params = dict(params)
        self._fn = GENERATORS[name]
        g = torch.Generator().manual_seed(_STATS_SEED)
        raw = self._fn(_STATS_SAMPLES, g, **self.params).to(torch.float64)
        mean = raw.mean(dim=0)
        std = raw.var(dim=0).mean().sqrt()
        if not torch.isfinite(std) or std.item() <= 0:
            raise ValueError(f"toy dataset {name!r} with {params} has zero or non-finite spread")
        # Buffers (float32 copies, moved to the generator's device on use).
        self.mean = mean.to(torch.float32)
        self.std = std.to(torch.float32)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """Draw ``n`` normalised points: ``Batch((raw - mean) / std * sigma_d, None)``."""
        raw = self._fn(n, generator, **self.params)
        mean = self.mean.to(raw.device)
        scale = (self.sigma_d / self.std).to(raw.device)
        return Batch(((raw - mean) * scale).to(torch.float32), None)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"ToyDataset({self.name!r}, sigma_d={self.sigma_d}{extra})"
