"""The flow-matching plugin: its loss against the closed form, OT pairing, time sampling, registration."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM, VPCosine
from fewstep_fm import FMConfig
from fewstep_fm.objective import FlowMatching, ot_pairing


class Linear(torch.nn.Module):
    """G(x, t, s) = A x + b t: simple enough to write the FM loss by hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.A = torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))

    def forward(self, x, t, s=None, cond=None):
        return x @ self.A.T + t[:, None] * self.b / 1000


def test_loss_equals_the_closed_form_under_ot_fm_euler_fm():
    ip = OTFM(0.5)
    net = Linear()
    fm = FlowMap(net, ip, "euler_fm", "none")
    x = torch.randn(64, 2, dtype=torch.float64)
    torch.manual_seed(7)
    loss, _ = FlowMatching(FMConfig(), ip).loss(fm, Batch(x), 0)
    torch.manual_seed(7)  # replay the same noise and times
    noise = 0.5 * torch.randn(64, 2, dtype=torch.float64)
    t = ip.eps + (ip.T - ip.eps) * torch.rand(64, dtype=torch.float64)
    x_t = (1 - t)[:, None] * x + t[:, None] * noise
    G = net(x_t / (0.5 * torch.sqrt((1 - t) ** 2 + t**2))[:, None], 1000 * t)
    expected = ((0.5 * G - (noise - x)) ** 2).mean()  # || sigma_d G - (eps - x) ||^2
    assert torch.allclose(loss, expected, rtol=1e-10)


def test_loss_target_is_the_interpolant_velocity_for_cosine():
    ip = VPCosine(0.5)
    x = torch.randn(32, 2, dtype=torch.float64)
    noise = 0.5 * torch.randn(32, 2, dtype=torch.float64)
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-6
    fd = (ip.interpolate(x, noise, t + h) - ip.interpolate(x, noise, t - h)) / (2 * h)
    assert torch.allclose(ip.velocity(x, noise, t), fd, atol=1e-6)


def test_ot_pairing_minimises_total_cost_and_is_a_permutation():
    torch.manual_seed(1)
    x, noise = torch.randn(16, 2), torch.randn(16, 2)
    paired = ot_pairing(x, noise)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, noise.tolist()))
    cost = ((x - paired) ** 2).sum()
    for _ in range(200):  # no random permutation does better
        assert cost <= ((x - noise[torch.randperm(16)]) ** 2).sum() + 1e-5
    # the pairing of row i with column j[i], not its inverse: a known permutation is undone
    perm = torch.randperm(16)
    assert torch.equal(ot_pairing(x, x[perm]), x)


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_times_stay_in_the_interpolant_range(sampling):
    ip = OTFM(0.5, eps=0.1, T=0.9)
    t = FlowMatching(FMConfig(time_sampling=sampling, logit_std=3.0), ip).sample_t(10_000, "cpu")
    assert t.min() >= 0.1 and t.max() <= 0.9
    if sampling == "uniform":
        assert abs(t.mean().item() - 0.5) < 0.01


def test_gradients_reach_the_network():
    ip = OTFM(0.5)
    net = Linear()
    loss, _ = FlowMatching(FMConfig(minibatch_ot=True, sigma=0.01), ip).loss(
        FlowMap(net, ip, "simple_edm", "none"), Batch(torch.randn(32, 2, dtype=torch.float64)), 0)
    loss.backward()
    assert net.A.grad is not None and torch.isfinite(net.A.grad).all() and net.A.grad.abs().sum() > 0


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        FMConfig(groupsize=4)
