"""IMM's loss weighting w(s, t) (Eq. 13, Table 4) and kernel bandwidth w~(s, t) (§4.2, App. C.8) against
their closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM, VPCosine
from fewstep_imm.weighting import kernel_bandwidth, loss_weight

D64 = torch.float64
CIFAR = OTFM(0.5, eps=0.006, T=0.994)  # IMM Table 5


def fm(param, ip=CIFAR):
    return FlowMap(torch.nn.Identity(), ip, param, "s")


def st():
    t = torch.linspace(0.05, 0.99, 40, dtype=D64)
    return t * torch.linspace(0.0, 0.9, 40, dtype=D64), t

def test_weight_matches_the_ot_fm_closed_form():
    t = torch.linspace(0.01, 0.99, 99, dtype=D64)
    for a, b in [(1, 5), (1, 4), (2, 4)]:
        expected = torch.sigmoid(b - 2 * torch.log((1 - t) / t)) * (1 - t) ** a / (t * (1 - t) * ((1 - t) ** 2 + t**2))
        assert torch.allclose(loss_weight(CIFAR, t, a, b), expected, rtol=1e-12)


@pytest.mark.parametrize("t, a, value", [(0.01, 1, "0.57"), (0.1, 1, "4.9"), (0.5, 1, "3.9"), (0.9, 1, "1.35"),
                                         (0.99, 1, "1.03"), (0.1, 2, "4.4"), (0.5, 2, "1.96"), (0.9, 2, "0.14")])
def test_weight_values_from_the_research_notes(t, a, value):
    # docs/imm.md §4.7, OT-FM with b = 4, quoted to the last digit shown
    w = loss_weight(CIFAR, torch.tensor([t], dtype=D64), a, 4.0)
    half_ulp = 0.5 * 10.0 ** -len(value.split(".")[1])
    assert abs(w.item() - float(value)) <= half_ulp + 1e-12


def test_weight_factors_switch_off_one_by_one_for_table_4():
    ip, t = VPCosine(0.5), torch.linspace(0.05, 0.95, 19, dtype=D64)
    alpha, sigma = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
    lam = 2 * torch.log(alpha / sigma)
    elbo = 0.5 * torch.sigmoid(3.0 - lam) * math.pi / (alpha * sigma)  # -d lambda/dt = pi/(sin cos)
    assert torch.allclose(loss_weight(ip, t, 1, 3, False, False, False), torch.ones_like(t))
    assert torch.allclose(loss_weight(ip, t, 1, 3, True, False, False), elbo)
    assert torch.allclose(loss_weight(ip, t, 2, 3, False, True, False), alpha**2)
    assert torch.allclose(loss_weight(ip, t, 1, 3, False, False, True), 1 / (alpha**2 + sigma**2))
    assert torch.allclose(loss_weight(ip, t, 2, 3), elbo * alpha**2 / (alpha**2 + sigma**2))


def test_bandwidth_euler_fm_is_one_over_sigma_d_times_gap():
    s, t = st()
    assert torch.allclose(kernel_bandwidth(fm("euler_fm"), s, t), 1 / (0.5 * (t - s)))


def test_bandwidth_simple_edm_and_identity_closed_forms():
    s, t = st()
    a_t, s_t, a_s, s_s = 1 - t, t, 1 - s, s
    det = (a_s * s_t - s_s * a_t).abs()
    assert torch.allclose(kernel_bandwidth(fm("simple_edm"), s, t), torch.sqrt(a_t**2 + s_t**2) / (0.5 * det))
    assert torch.allclose(kernel_bandwidth(fm("identity"), s, t), s_t / det)


def test_constant_bandwidth():
    s, t = st()
    assert torch.equal(kernel_bandwidth(fm("euler_fm"), s, t, 3.0), torch.full_like(t, 3.0))


def test_bandwidth_floor_on_the_gap():
    """bandwidth_min_gap g: w~ = 1/(sigma_d max(t - s, g)) under Euler-FM (docs/imm.md §11), unchanged above g."""
    s, t = st()
    g = float((t - s).median())
    capped = kernel_bandwidth(fm("euler_fm"), s, t, "c_out", g)
    assert torch.allclose(capped, 1 / (0.5 * torch.clamp(t - s, min=g)))
    assert (capped < kernel_bandwidth(fm("euler_fm"), s, t)).any()
