"""Interpolants x_t = alpha_t x + sigma_t eps, noise at t = 1, data at t = 0.

The interpolant owns the schedule (alpha, sigma and their derivatives), the noise-to-signal ratio
eta_t = sigma_t / alpha_t and its inverse, the log-SNR lambda_t = 2 log(alpha_t / sigma_t), the DDIM
step, the time range [eps, T] and the prior eps ~ N(0, sigma_d^2 I): the prior std is sigma_d for
every objective in this framework (IMM §4.1 "Eliminating stochasticity"; docs/imm.md §1).

Every method takes times as tensors (a scalar tensor or one value per sample, shape [B]).
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def bcast(c: Tensor, x: Tensor) -> Tensor:
    """Reshape coefficients so they broadcast against x [B, ...]: per sample [B], a scalar, or one per
    group [G] of B/G consecutive samples (grouped times, see ``FlowMap``)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c.ndim == 1 and c.shape[0] not in (1, x.shape[0]):
        c = c.repeat_interleave(x.shape[0] // c.shape[0])
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c


class Interpolant:
    """Base class: subclasses define alpha, sigma, their derivatives, eta^-1 and lambda.

    Parameters
    ----------
    sigma_d : std of the data and of the prior (IMM Table 5: 0.5).
    eps, T : the time range [eps, T] used for training and sampling (IMM App. I.1).
    """

    name = "interpolant"

    def __init__(self, sigma_d: float = 0.5, eps: float = 0.006, T: float = 0.994):
        if not 0.0 <= eps < T <= 1.0:
            raise ValueError(f"need 0 <= eps < T <= 1 (got eps={eps}, T={T})")
        self.sigma_d, self.eps, self.T = float(sigma_d), float(eps), float(T)

    # --- schedule (subclasses) -------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha_t / dt."""
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma_t / dt."""
        raise NotImplementedError

    def eta_inv(self, eta: Tensor) -> Tensor:
        """The time t with eta_t = eta."""
        raise NotImplementedError

    def lam(self, t: Tensor) -> Tensor:
        """log-SNR lambda_t = 2 log(alpha_t / sigma_t) (IMM §4.2)."""
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def d_lam(self, t: Tensor) -> Tensor:
        """d lambda_t / dt = 2 (alpha'/alpha - sigma'/sigma)."""
        return 2.0 * (self.d_alpha(t) / self.alpha(t) - self.d_sigma(t) / self.sigma(t))

    # --- derived ---------------------------------------------------------------------------
    def eta(self, t: Tensor) -> Tensor:
        """Noise-to-signal ratio eta_t = sigma_t / alpha_t (IMM §4.2)."""
        return self.sigma(t) / self.alpha(t)

    def to_edm_sigma(self, t: Tensor) -> Tensor:
        """EDM noise level of time t: x_t / alpha_t = x + sigma_d eta_t z, so sigma = sigma_d eta_t."""
        return self.sigma_d * self.eta(t)

    def from_edm_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`to_edm_sigma`."""
        return self.eta_inv(torch.as_tensor(sigma) / self.sigma_d)

    def interpolate(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x + sigma_t eps, with eps drawn from :meth:`prior`."""
        return bcast(self.alpha(t), x) * x + bcast(self.sigma(t), x) * noise

    def velocity(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Conditional velocity d x_t / dt = alpha'_t x + sigma'_t eps (the FM target)."""
        return bcast(self.d_alpha(t), x) * x + bcast(self.d_sigma(t), x) * noise

    def ddim(self, x_t: Tensor, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """DDIM(x_t, x, s, t) = (alpha_s - (sigma_s/sigma_t) alpha_t) x + (sigma_s/sigma_t) x_t.

        Moves x_t at time t to time s <= t along the interpolant through the clean estimate x.
        Note the order: target time s first, current time t second (IMM Eq. 11).
        """
        ratio = self.sigma(s) / self.sigma(t)
        a = bcast(self.alpha(s) - ratio * self.alpha(t), x)
        return a * x + bcast(ratio, x) * x_t

    def prior(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw eps ~ N(0, sigma_d^2 I): the prior's std is sigma_d, not 1 (IMM §4.1, Alg. 2)."""
        src = generator.device if generator is not None else device
        z = torch.randn(shape, generator=generator, device=src, dtype=dtype)
        return self.sigma_d * z.to(device)

    def times(self, t: float | Tensor, like: Tensor | None = None) -> Tensor:
        """A time value as a float tensor on ``like``'s device (scalars are never Python floats)."""
        if like is None:
            return torch.as_tensor(t, dtype=torch.float32)
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_d={self.sigma_d}, eps={self.eps}, T={self.T})"


class OTFM(Interpolant):
    """Optimal-transport / rectified-flow path: alpha_t = 1 - t, sigma_t = t (IMM §2.1, Table 5)."""

    name = "ot_fm"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t + 0.0 * t  # a fresh tensor, never an alias of t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def eta(self, t: Tensor) -> Tensor:
        """eta_t = t / (1 - t)."""
        return t / (1.0 - t)

    def eta_inv(self, eta: Tensor) -> Tensor:
        """t = eta / (1 + eta)."""
        return eta / (1.0 + eta)

    def d_lam(self, t: Tensor) -> Tensor:
        """d lambda / dt = -2 / (t (1 - t))."""
        return -2.0 / (t * (1.0 - t))


class VPCosine(Interpolant):
    """Variance-preserving cosine path: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (IMM §2.1)."""

    name = "vp_cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def eta(self, t: Tensor) -> Tensor:
        """eta_t = tan(pi t / 2)."""
        return torch.tan(0.5 * math.pi * t)

    def eta_inv(self, eta: Tensor) -> Tensor:
        """t = (2 / pi) arctan(eta)."""
        return (2.0 / math.pi) * torch.atan(eta)

    def d_lam(self, t: Tensor) -> Tensor:
        """d lambda / dt = -pi / (sin(pi t/2) cos(pi t/2))."""
        return -math.pi / (torch.sin(0.5 * math.pi * t) * torch.cos(0.5 * math.pi * t))


def build_ot_fm(cfg) -> OTFM:
    return OTFM(cfg.sigma_d, cfg.eps, cfg.T)


def build_vp_cosine(cfg) -> VPCosine:
    return VPCosine(cfg.sigma_d, cfg.eps, cfg.T)
