"""sCT's learned weighting w_phi(t) (fewstep_sct/weighting.py) and the adaptive loss it enters."""
from __future__ import annotations

import math

import torch

from fewstep_sct.objective import adaptive_loss
from fewstep_sct.weighting import LearnedWeighting


def test_starts_at_zero_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    w = LearnedWeighting(16)
    assert torch.equal(torch.get_rng_state(), before)  # its fixed features come from a private generator
    t = torch.linspace(0, math.pi / 2, 7)
    assert torch.equal(w(t), torch.zeros(7))  # zero-initialised head: w = 0, e^w = 1 at the start
    assert torch.equal(LearnedWeighting(16).freqs, w.freqs)  # the same features in every process and session


def test_features_are_the_stated_fourier_features():
    """phi_k(t) = sqrt(2) cos(2 pi (f_k t + p_k)), written out from the buffers; w = a^T phi + b."""
    w = LearnedWeighting(8).double()
    with torch.no_grad():
        w.a.copy_(torch.arange(8, dtype=torch.float64) / 10)
        w.b.fill_(-0.3)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    phi = [[math.sqrt(2) * math.cos(2 * math.pi * (f * ti + p)) for f, p in zip(w.freqs.tolist(), w.phases.tolist())]
           for ti in t.tolist()]
    expected = torch.tensor([sum(k / 10 * v for k, v in enumerate(row)) - 0.3 for row in phi], dtype=torch.float64)
    assert torch.allclose(w(t), expected, rtol=1e-12, atol=1e-12)


def test_adaptive_loss_is_the_written_formula():
    """(e^w / D) ||F - target||^2 - w per sample (sCM Alg. 1, with the UNVERIFIED 1/D)."""
    F = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 2.0, 1.0], [0.5, 1.0, 3.0]], dtype=torch.float64)
    w = torch.tensor([0.2, -1.0], dtype=torch.float64)
    expected = torch.tensor([math.exp(0.2) * 2 / 3 - 0.2, math.exp(-1.0) * 4 / 3 + 1.0], dtype=torch.float64)
    assert torch.allclose(adaptive_loss(F, target, w), expected, rtol=1e-14)


def test_learns_its_optimum_e_w_equals_D_over_the_residual_energy():
    """Minimising (e^w / D) ||Delta||^2 - w over w gives e^{w*(t)} = D / E[||Delta||^2 | t] (docs/objectives.md
    §4.2). Residuals Delta = s(t) xi, xi ~ N(0, I_D), D = 4, s(t) = 0.5 + t: E||Delta||^2 = D s(t)^2, so
    e^{w*} = 1 / s(t)^2 (without the 1/D it would be 1 / (4 s^2): a factor 4 off). 400 Adam steps."""
    torch.manual_seed(0)
    w = LearnedWeighting(128)
    steps, D = 400, 4
    opt = torch.optim.Adam(w.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        t = 0.5 * math.pi * torch.rand(1024, generator=g)
        res = (0.5 + t)[:, None] * torch.randn(1024, D, generator=g)
        loss = adaptive_loss(res, torch.zeros_like(res), w(t)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    t = torch.linspace(0.1, 1.5, 8)
    ratio = torch.exp(w(t)).detach() * (0.5 + t) ** 2  # e^{w(t)} / e^{w*(t)}
    assert bool(((ratio - 1).abs() < 0.08).all()), ratio
