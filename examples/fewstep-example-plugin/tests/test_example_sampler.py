"""The midpoint sampler: truthful NFE, exactness on a flow it integrates exactly, second-order convergence."""
from __future__ import annotations

import pytest
import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.samplers import Euler, generate
from fewstep.testing import ProbeNet
from fewstep_example import MidpointConfig
from fewstep_example.sampler import Midpoint, build_midpoint

F64 = torch.float64


class TimeOnly(torch.nn.Module):
    """G = p + q t (t = c_noise / 1000): under Euler-FM the velocity sigma_d G depends on t only, linearly,
    so x(t) is quadratic in t and the midpoint rule is exact."""

    def __init__(self, p: float, q: float):
        super().__init__()
        self.p, self.q = p, q

    def forward(self, x, t, s=None, cond=None):
        return torch.ones_like(x) * (self.p + self.q * t / 1000).reshape(-1, *([1] * (x.ndim - 1)))


class Zero(torch.nn.Module):
    """G = 0. With Simple-EDM, g = alpha_t x_t / (alpha_t^2 + sigma_t^2): the exact posterior mean of data
    N(0, sigma_d^2 I), whose ODE has the closed form x_s = x_t n(s) / n(t), n = sqrt(alpha^2 + sigma^2)."""

    def forward(self, x, t, s=None, cond=None):
        return torch.zeros_like(x)


def run(sampler, fm, x, n):
    ts = sampler.schedule(fm.interpolant, n)
    before = fm.nfe
    out = sampler(fm, x, ts)
    return out, fm.nfe - before


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_nfe_is_two_per_step_and_counted_by_the_flow_map(steps):
    net = ProbeNet(2).float()  # generate() draws float32 noise
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s")
    x, nfe = generate(fm, Midpoint(), steps, 16, (2,), generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 2) and x.dtype == torch.float32
    assert nfe == 2 * steps == len(net.calls)


def test_guidance_on_labels_doubles_the_cost():
    net = ProbeNet(2, num_classes=3).float()
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s", num_classes=3)
    labels = torch.tensor([0, 1, 2, 0])
    _, nfe = generate(fm, Midpoint(guidance=2.0), 3, 4, (2,), cond=labels, generator=torch.Generator().manual_seed(0))
    assert nfe == 12  # 2 velocities x 2 branches (label and null class) per step
    assert len(net.calls) == 6 and all(c["cond"].shape == (8,) for c in net.calls)  # one batched call of 2B


def test_schedule_comes_from_the_base_class():
    ip = OTFM(0.5)
    for kind in ("uniform", "eta", "edm"):
        ts = Midpoint(kind, (1.4,)).schedule(ip, 4)
        assert ts.shape == (5,) and bool((ts[1:] < ts[:-1]).all())
        assert ts[0].item() == pytest.approx(ip.T) and ts[-1].item() == pytest.approx(ip.eps)
    assert Midpoint("eta", (1.4,)).schedule(ip, 2)[1].item() == pytest.approx(1.4 / 2.4)  # eta^-1(1.4)


@pytest.mark.parametrize("steps", [1, 3])
def test_exact_when_x_is_quadratic_in_t(steps):
    ip, p, q = OTFM(0.5), 0.3, -1.7
    fm = FlowMap(TimeOnly(p, q), ip, "euler_fm", "s")
    x = torch.randn(5, 2, dtype=F64)
    out, _ = run(Midpoint(), fm, x, steps)
    T, eps = ip.T, ip.eps
    exact = x + ip.sigma_d * (p * (eps - T) + 0.5 * q * (eps**2 - T**2))  # x_eps = x_T + int_T^eps sigma_d G dt
    assert torch.allclose(out, exact, atol=1e-12)
    euler, _ = run(Euler(), fm, x, steps)
    assert (euler - exact).abs().max() > 1e-3  # Euler is not exact here


@pytest.mark.parametrize("ip", [OTFM(0.5), OTFM(0.5, eps=0.2, T=0.9)], ids=["default", "eps0.2-T0.9"])
def test_converges_to_a_closed_form_flow(ip):
    """At least second order: the error falls >= 4x per doubling of the steps (on this scalar linear
    ODE the h^2 term happens to cancel and it falls 8x), and far below Euler's at equal NFE."""
    fm = FlowMap(Zero(), ip, "simple_edm", "s")
    x = torch.randn(64, 2, dtype=F64)
    t_ends = torch.tensor([ip.eps, ip.T], dtype=F64)
    n_eps, n_T = (ip.alpha(t_ends) ** 2 + ip.sigma(t_ends) ** 2).sqrt().tolist()
    exact = x * n_eps / n_T
    err = {k: (run(Midpoint(), fm, x, k)[0] - exact).abs().max().item() for k in (8, 16, 32)}
    assert err[8] / err[16] > 3.5 and err[16] / err[32] > 3.5
    euler_err = (run(Euler(), fm, x, 32)[0] - exact).abs().max().item()
    assert err[16] < 0.01 * euler_err  # both 32 NFE


def test_agrees_with_many_step_euler_on_a_nonlinear_network():
    torch.manual_seed(0)
    fm = FlowMap(ProbeNet(2), OTFM(0.5), "simple_edm", "s")
    x = 0.5 * torch.randn(32, 2, dtype=F64)
    with torch.no_grad():
        ref = run(Midpoint(), fm, x, 512)[0]
        coarse = [(run(Midpoint(), fm, x, k)[0] - ref).abs().max().item() for k in (8, 16)]
        euler = (run(Euler(), fm, x, 4096)[0] - ref).abs().max().item()
    assert euler < 1e-3  # many-step Euler lands on the same point (its error is O(h))
    assert 3.0 < coarse[0] / coarse[1] < 5.0


def test_image_shaped_batches_keep_their_shape():
    fm = FlowMap(TimeOnly(0.1, 0.2), OTFM(0.5), "euler_fm", "stride")
    x = torch.randn(3, 1, 4, 4)
    out, nfe = run(Midpoint(), fm, x, 2)
    assert out.shape == x.shape and out.dtype == x.dtype and nfe == 4


def test_factory_reads_the_shared_sampler_config():
    s = build_midpoint(MidpointConfig(schedule="edm", rho=5.0, guidance=1.5))
    assert isinstance(s, Midpoint) and (s.schedule_kind, s.rho, s.guidance) == ("edm", 5.0, 1.5)
