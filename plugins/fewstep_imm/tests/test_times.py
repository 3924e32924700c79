"""IMM's times t, s and the mapping r(s, t) (IMM §4.2, App. C.6-C.7) against their closed forms."""
from __future__ import annotations

import pytest
import torch

from fewstep.interpolants import OTFM, VPCosine
from fewstep_imm.times import mapping_r, sample_times

D64 = torch.float64
CIFAR = OTFM(0.5, eps=0.006, T=0.994)  # IMM Table 5
IMAGENET = OTFM(0.5, eps=0.0, T=0.994)


def grid(ip, n=2001):
    return torch.linspace(ip.eps, ip.T, n, dtype=D64)


def test_sample_times_are_uniform_in_range():
    torch.manual_seed(0)
    s, t = sample_times(CIFAR, 200_000)
    assert s.dtype == t.dtype == D64
    assert (s >= CIFAR.eps).all() and (s <= t).all() and (t <= CIFAR.T).all()
    assert abs(t.mean().item() - 0.5) < 0.003  # U(0.006, 0.994)
    u = (s - CIFAR.eps) / (t - CIFAR.eps)  # s | t ~ U(eps, t)  <=>  u ~ U(0, 1) independent of t
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    assert abs(torch.corrcoef(torch.stack([u, t]))[0, 1].item()) < 0.01


@pytest.mark.parametrize("t, gap", [(0.1, 4.1e-3), (0.5, 1.3e-3), (0.9, 5.1e-5), (0.994, 1.8e-7)])
def test_eta_decrement_gaps_match_research_table(t, gap):
    # docs/imm.md §4.3: CIFAR (k = 15) gives t - r ~ 4.1e-3 at 0.1, ... 1.8e-7 at T
    t_ = torch.tensor([t], dtype=D64)
    r = mapping_r(CIFAR, torch.full_like(t_, CIFAR.eps), t_, "eta", 15)
    assert (t_ - r).item() == pytest.approx(gap, rel=0.05)


def test_eta_decrement_closed_form():
    k = 12
    t = grid(CIFAR)
    s = torch.full_like(t, CIFAR.eps)
    eta_max, eta_min = 0.994 / 0.006, 0.006 / 0.994
    eps_k = (eta_max - eta_min) / 2**k
    eta_r = torch.clamp(t / (1 - t) - eps_k, min=eta_min)
    expected = torch.maximum(eta_r / (1 + eta_r), s)
    assert torch.allclose(mapping_r(CIFAR, s, t, "eta", k), expected, rtol=0, atol=1e-14)


# lambda and 1/eta are infinite at t = 0, so those mappings need eps > 0 (the recipe check says so)
@pytest.mark.parametrize("ip, mapping", [(ip, m) for ip in (CIFAR, IMAGENET, VPCosine(0.5, 0.006, 0.996))
                                         for m in ("eta", "t", "lambda", "inv_eta")
                                         if ip.eps > 0 or m in ("eta", "t")])
def test_r_lies_in_s_t_and_is_monotone_in_t(ip, mapping):
    t = grid(ip)[1:]
    for s_val in (ip.eps, 0.3, 0.7):
        s = torch.minimum(torch.full_like(t, s_val), t)
        r = mapping_r(ip, s, t, mapping, 10)
        assert (r >= s).all() and (r <= t).all()
        assert (r[t > s] < t[t > s]).all()  # strictly below t wherever s < t
        assert (r[1:] >= r[:-1]).all()  # non-decreasing in t


def test_r_is_s_at_small_t_the_base_case():
    # ImageNet (k = 12, eps = 0): every t below eta^-1(eps_k) ~ 0.0388 has r = s (docs/imm.md §4.3)
    eps_k = (0.994 / 0.006) / 2**12
    boundary = eps_k / (1 + eps_k)
    assert boundary == pytest.approx(0.0388, abs=5e-4)
    t = torch.linspace(1e-4, 0.2, 2000, dtype=D64)
    s = torch.zeros_like(t)
    r = mapping_r(IMAGENET, s, t, "eta", 12)
    assert (r[t <= boundary] == 0).all() and (r[t > boundary * 1.001] > 0).all()


def test_min_gap_bounds_r_below_t_minus_delta():
    t = grid(CIFAR)[1:]
    s = torch.full_like(t, CIFAR.eps)
    r = mapping_r(CIFAR, s, t, "eta", 15, min_gap=1e-4)
    assert (r <= torch.maximum(t - 1e-4, s) + 1e-15).all()
    assert ((t - r)[t > 0.5] >= 1e-4 - 1e-12).all()


def test_ablation_mappings_take_constant_steps_in_their_quantity():
    ip, k = OTFM(0.5, eps=0.005, T=0.99), 8
    t = torch.linspace(0.3, 0.99, 50, dtype=D64)
    s = torch.full_like(t, ip.eps)
    r_t = mapping_r(ip, s, t, "t", k)
    assert torch.allclose(t - r_t, torch.full_like(t, (0.99 - 0.005) / 2**k))
    lam = lambda u: 2 * torch.log((1 - u) / u)  # noqa: E731
    r_l = mapping_r(ip, s, t, "lambda", k)
    step = (lam(torch.tensor(0.005, dtype=D64)) - lam(torch.tensor(0.99, dtype=D64))) / 2**k
    assert torch.allclose(lam(r_l) - lam(t), step.expand_as(t))
    r_i = mapping_r(ip, s, t, "inv_eta", k)
    step = (0.995 / 0.005 - 0.01 / 0.99) / 2**k
    assert torch.allclose((1 - r_i) / r_i - (1 - t) / t, torch.full_like(t, step))


def test_unknown_mapping_is_refused():
    with pytest.raises(ValueError, match="unknown mapping"):
        mapping_r(CIFAR, torch.zeros(1, dtype=D64), torch.ones(1, dtype=D64) / 2, "sigma")


# --- w(s, t) ---------------------------------------------------------------------------------


# --- w~(s, t) --------------------------------------------------------------------------------
