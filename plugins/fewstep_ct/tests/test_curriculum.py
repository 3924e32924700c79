"""CT's noise levels: the Karras grid, iCT's N(k) and index probabilities, ECT's r(t), the sigma <-> t
map through the interpolant, and the pseudo-Huber distance, each against its closed form."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.interpolants import OTFM, VPCosine
from fewstep_ct.curriculum import (
    ect_r,
    ect_stage,
    index_probabilities,
    karras_sigmas,
    num_points,
    sigma_range,
    sigma_to_time,
    stage_length,
)
from fewstep_ct.objective import consistency_distance, pseudo_huber

D64 = torch.float64
CIFAR = OTFM(0.5, eps=0.006, T=0.994)  # the toy recipes' interpolant (IMM App. I.1)


# --- iCT's curriculum N(k) -----------------------------------------------------------------------
@pytest.mark.parametrize("step, n", [
    (0, 11), (499, 11), (500, 21), (999, 21), (1000, 41), (1499, 41), (1500, 81), (2000, 161),
    (2500, 321), (3000, 641), (3499, 641), (3500, 1281), (3999, 1281), (10_000, 1281),
])
def test_doubling_curriculum_at_stage_boundaries(step, n):
    # K = 4000 (ct_toy), s0 = 10, s1 = 1280: K' = floor(4000 / (log2 128 + 1)) = 500, N = 10 * 2^stage + 1
    assert stage_length(4000) == 500
    assert num_points(step, 4000) == n


def test_curriculum_when_s1_over_s0_is_not_a_power_of_two():
    # CT-like s0 = 2, s1 = 150, K = 1000: log2 floor(75) + 1 = 7.2288, K' = floor(138.3) = 138
    assert stage_length(1000, 2, 150) == 138
    assert [num_points(k, 1000, 2, 150) for k in (0, 137, 138, 6 * 138 - 1, 6 * 138, 7 * 138, 999)] == \
        [3, 3, 5, 65, 129, 151, 151]  # the last stage is capped at s1 + 1


def test_short_runs_still_have_a_stage_of_one_step():
    assert stage_length(3) == 1 and num_points(2, 3) == 41


# --- the Karras grid ----------------------------------------------------------------------------
def test_karras_grid_closed_form():
    a, b = 0.002 ** (1 / 7), 80 ** (1 / 7)
    sig = karras_sigmas(11, 0.002, 80.0, 7.0)
    assert sig[0].item() == 0.002 and sig[-1].item() == 80.0
    for i in (1, 5, 9):
        assert sig[i].item() == pytest.approx((a + i / 10 * (b - a)) ** 7, rel=1e-12)
    assert (sig[1:] > sig[:-1]).all()
    assert sig[1].item() == pytest.approx(0.016721, rel=1e-4)  # hand: (0.411560 + 0.145856)^7


def test_index_probabilities_sum_to_one_and_follow_the_log_normal():
    lo, hi = sigma_range(CIFAR)
    for n in (11, 41, 1281):
        p = index_probabilities(karras_sigmas(n, lo, hi))
        assert p.shape == (n - 1,) and (p >= 0).all()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    sig = karras_sigmas(1281, lo, hi)
    p = index_probabilities(sig)
    # mass of ln sigma within one std of P_mean, renormalised to the grid's range [0.00302, 80]
    inside = (sig[:-1] >= math.exp(-3.1)) & (sig[1:] <= math.exp(0.9))
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    total = phi((math.log(hi) + 1.1) / 2) - phi((math.log(lo) + 1.1) / 2)
    assert p[inside].sum().item() == pytest.approx((phi(1) - phi(-1)) / total, abs=0.005)


# --- sigma <-> t, through the interpolant -------------------------------------------------------
@pytest.mark.parametrize("ip", [CIFAR, OTFM(0.5, eps=0.0, T=0.994), VPCosine(0.5, 0.006, 0.996)])
def test_sigma_time_round_trip_through_the_interpolant(ip):
    t = torch.linspace(max(ip.eps, 1e-4), ip.T, 1001, dtype=D64)
    sig = ip.to_edm_sigma(t)
    assert torch.allclose(ip.from_edm_sigma(sig), t, rtol=1e-12, atol=0)
    lo, hi = sigma_range(ip)
    inside = (sig > lo) & (sig <= hi)
    assert torch.allclose(sigma_to_time(ip, sig, lo)[inside], t[inside], rtol=1e-12, atol=0)


def test_ot_fm_sigma_closed_form_and_the_range_used():
    t = torch.tensor([0.006, 0.5, 0.6215, 0.994], dtype=D64)
    assert torch.allclose(CIFAR.to_edm_sigma(t), 0.5 * t / (1 - t))
    lo, hi = sigma_range(CIFAR)
    assert lo == pytest.approx(0.5 * 0.006 / 0.994)  # 0.003018: the data end, above iCT's 0.002
    assert hi == 80.0  # sigma(T) = 82.8 is above iCT's sigma_max
    assert sigma_to_time(CIFAR, torch.tensor([80.0], dtype=D64), lo).item() == pytest.approx(80 / 80.5)
    # the grid's bottom point is the data end t = eps exactly; out-of-range sigmas clamp to [eps, T]
    got = sigma_to_time(CIFAR, torch.tensor([lo, 1e-4, 1e6], dtype=D64), lo)
    assert got.tolist() == [0.006, 0.006, 0.994]
    # with eps = 0 (latents) the grid keeps sigma_min = 0.002, identified with the data end t = 0
    latents = OTFM(0.5, eps=0.0, T=0.994)
    lo0, _ = sigma_range(latents)
    assert lo0 == 0.002 and sigma_to_time(latents, torch.tensor([0.002], dtype=D64), lo0).item() == 0.0


def test_sigma_range_must_overlap_the_interpolant():
    with pytest.raises(ValueError, match="does not overlap"):
        sigma_range(CIFAR, 100.0, 200.0)


# --- ECT's mapping -----------------------------------------------------------------------------
def test_ect_mapping_closed_form():
    t = torch.tensor([4.0, 10.0], dtype=D64)
    sig = lambda v: 1 / (1 + math.exp(v))  # sigmoid(-v)  # noqa: E731
    for stage in (1, 3):
        expected = [v * (1 - (1 + 8 * sig(v)) / 2 ** (stage + 1)) for v in (4.0, 10.0)]
        assert ect_r(t, stage).tolist() == pytest.approx(expected, rel=1e-12)
    assert ect_r(torch.tensor([4.0], dtype=D64), 1).item() == pytest.approx(2.856110, rel=1e-6)  # by hand


@pytest.mark.parametrize("stage, edge", [(0, math.log(7)), (1, math.log(5 / 3))])
def test_ect_mapping_clamps_to_the_data_end_below_its_edge(stage, edge):
    # r <= 0 iff 1 + 8 sigmoid(-t) >= 2^(stage+1): t <= ln 7 in stage 0, t <= ln(5/3) in stage 1
    below = torch.tensor([1e-3, 0.3 * edge, edge - 1e-9], dtype=D64)
    assert (ect_r(below, stage) == 0).all()
    above = torch.tensor([edge + 1e-6, 2 * edge, 80.0], dtype=D64)
    r = ect_r(above, stage)
    assert (r > 0).all() and (r < above).all()


def test_ect_mapping_never_clamps_from_stage_two_and_shrinks_the_gap():
    t = torch.logspace(-3, math.log10(80), 500, dtype=D64)
    gaps = [t - ect_r(t, s) for s in range(2, 8)]
    assert all((ect_r(t, s) > 0).all() for s in range(2, 8))
    for g0, g1 in zip(gaps, gaps[1:]):
        assert torch.allclose(g1, g0 / 2, rtol=1e-12)  # q = 2: the gap halves every stage
    assert ect_stage(0, 500) == 0 and ect_stage(499, 500) == 0 and ect_stage(500, 500) == 1


# --- the distance ------------------------------------------------------------------------------
def test_pseudo_huber_closed_form_and_limits():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-4, 0.0]], dtype=D64)
    c = 0.5
    expected = torch.tensor([math.sqrt(25 + c * c) - c, 0.0, math.sqrt(1e-8 + c * c) - c], dtype=D64)
    assert torch.allclose(pseudo_huber(d, c), expected, rtol=1e-12)
    small = torch.full((4, 2), 1e-5, dtype=D64)  # ||d|| << c: ~ ||d||^2 / (2c)
    assert torch.allclose(pseudo_huber(small, 1.0), small.pow(2).sum(1) / 2, rtol=1e-8)
    large = torch.full((4, 2), 1e4, dtype=D64)  # ||d|| >> c: ~ ||d|| - c, so ~ L1-like in the norm
    assert torch.allclose(pseudo_huber(large, 1.0), large.norm(dim=1) - 1.0, rtol=1e-8)
    # c = 0 is the L2 norm (ECT), with a zero (not NaN) gradient at d = 0
    z = torch.zeros(3, 2, dtype=D64, requires_grad=True)
    pseudo_huber(z, 0.0).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    y, y2 = torch.randn(5, 3, 2, dtype=D64), torch.randn(5, 3, 2, dtype=D64)
    assert torch.allclose(consistency_distance(y, y2, "pseudo_huber", 0.0), (y - y2).flatten(1).norm(dim=1))
    assert torch.allclose(consistency_distance(y, y2, "squared_l2"), (y - y2).pow(2).sum((1, 2)))
