"""sCT's learned adaptive weighting w_phi(t) (Lu & Song 2024, §4.2 and Alg. 1; docs/objectives.md §4.2).

The loss (e^{w_phi(t)}/D) ||Delta||^2 - w_phi(t) is minimised over phi at e^{w*(t)} = D / E[||Delta||^2 | t]:
the weighting learns the inverse of the residual's scale at each t, as EDM2's learned uncertainty does
(Karras et al. 2024), which sCM follows. sCM does not give the architecture of w_phi (UNVERIFIED;
reimplementations use a linear layer on sinusoidal features of t, or a log-variance head on the backbone).
Here: w_phi(t) = Linear(phi(t)) with random Fourier features phi_k(t) = sqrt(2) cos(2 pi (f_k t + p_k)),
f_k ~ N(0, 1), p_k ~ U[0, 1) drawn once from a fixed seed (EDM2's Fourier embedding of the noise level, here
of the TrigFlow time t in [0, pi/2]), and a zero-initialised output, so that w = 0 at the start.
"""
from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


class LearnedWeighting(nn.Module):
    """w_phi(t) = a^T phi(t) + b, phi(t) = sqrt(2) cos(2 pi (f t + p)): ``features`` random Fourier features
    of the TrigFlow time t (fixed buffers from ``seed``; the global RNG is not touched) and a linear head
    initialised to zero. Computed in float32 (or float64 for float64 times), with autocast off."""

    def __init__(self, features: int = 128, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(features, generator=gen, dtype=torch.float64).float())
        self.register_buffer("phases", torch.rand(features, generator=gen, dtype=torch.float64).float())
        self.a = nn.Parameter(torch.zeros(features))  # zero-initialised head: w = 0 at the start
        self.b = nn.Parameter(torch.zeros(()))

    def features(self, t: Tensor) -> Tensor:
        """phi(t) [B, features] = sqrt(2) cos(2 pi (f_k t + p_k)) (each feature has mean square 1 over phases)."""
        dtype = torch.promote_types(t.dtype, self.freqs.dtype)
        args = t.to(dtype)[:, None] * self.freqs.to(dtype)[None] + self.phases.to(dtype)[None]
        return math.sqrt(2.0) * torch.cos(2.0 * math.pi * args)

    def forward(self, t: Tensor) -> Tensor:
        """w_phi(t) [B] for TrigFlow times t [B]."""
        with torch.autocast(t.device.type, enabled=False):
            phi = self.features(t)
            return phi.to(self.a.dtype) @ self.a + self.b
