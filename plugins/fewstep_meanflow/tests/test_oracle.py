"""The Gaussian oracle of docs/objectives.md §2 and §3.11: the exact average velocity u* plugged in as the network.

Data x ~ N(m, diag(v)), prior eps ~ N(0, c^2 I) with c = sigma_d, OT-FM z_t = (1 - t) x + t eps. Closed forms
(per dimension): V_t = (1 - t)^2 v + t^2 c^2, rho(r, t) = sqrt(V_r / V_t), v*(z, t) = -m + k_t (z - (1 - t) m)
with k_t = (t c^2 - (1 - t) v) / V_t, u*(z, r, t) = ((1 - rho)/(t - r)) (z - (1 - t) m) - m (-> v* as r -> t).
The MeanFlow target of the exact model satisfies, sample by sample, u_tgt - u* = rho(r, t) ((eps - x) - v*(z_t, t)).
"""
from __future__ import annotations

import pytest
import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.samplers import Pushforward
from fewstep_meanflow import MeanFlowConfig
from fewstep_meanflow.objective import MeanFlow, mean_flow_target

D64 = torch.float64
SIGMA_D = 0.5
M = torch.tensor([0.3, -0.2], dtype=D64)
VAR = torch.tensor([0.25, 0.09], dtype=D64)


def std_t(t, var):
    """sqrt(V_t) = hypot((1 - t) sqrt(v), t c): differentiable wherever V_t > 0 (also for v = 0)."""
    return torch.hypot((1 - t) * var.sqrt(), t * SIGMA_D)


def v_star(z, t, m, var):
    """The marginal velocity E[eps - x | z_t = z] (§2)."""
    k = (t * SIGMA_D**2 - (1 - t) * var) / std_t(t, var) ** 2
    return -m + k * (z - (1 - t) * m)


def u_star(z, r, t, m, var):
    """The exact average velocity (§2); at r = t the instantaneous one, v*. Safe at t = r for forward-mode AD."""
    h = t - r
    gap = h > 0
    rho = std_t(r, var) / std_t(t, var)
    avg = (1 - rho) / torch.where(gap, h, torch.ones_like(h)) * (z - (1 - t) * m) - m
    return torch.where(gap, avg, v_star(z, t, m, var))


class GaussianOracle(torch.nn.Module):
    """G*(c_in z, c_noise, e2) = u*(z, r, t) / sigma_d for the Euler-FM flow map: undoes c_in(t) = 1/(sigma_d
    sqrt((1 - t)^2 + t^2)), c_noise = time_scale t and e2 = time_scale (t - r) (stride) or time_scale r (s)."""

    def __init__(self, m, var, time_scale, second_time):
        super().__init__()
        self.m, self.var, self.ts, self.second = m, var, time_scale, second_time
        self.w = torch.nn.Parameter(torch.zeros((), dtype=D64))  # a parameter, unused: the loss's graph exists

    def forward(self, x, t, s=None, cond=None):
        t = t / self.ts
        r = t - s / self.ts if self.second == "stride" else s / self.ts
        z = x * (SIGMA_D * torch.sqrt((1 - t) ** 2 + t**2))[:, None]
        return u_star(z, r[:, None], t[:, None], self.m, self.var) / SIGMA_D + 0 * self.w


def oracle_flowmap(m=M, var=VAR, time_scale=1.0, second_time="stride", eps=0.0, T=1.0):
    ip = OTFM(SIGMA_D, eps=eps, T=T)
    return FlowMap(GaussianOracle(m, var, time_scale, second_time), ip, "euler_fm", second_time, time_scale), ip


def draws(n, m, var, seed, ip):
    """x ~ N(m, diag var), eps ~ N(0, sigma_d^2 I) and (r, t) from the objective's sampler (75 % r != t)."""
    g = torch.Generator().manual_seed(seed)
    x = m + var.sqrt() * torch.randn(n, 2, generator=g, dtype=D64)
    noise = SIGMA_D * torch.randn(n, 2, generator=g, dtype=D64)
    torch.manual_seed(seed)
    r, t = MeanFlow(MeanFlowConfig(), ip).sample_r_t(n, dtype=D64)
    return x, noise, r, t


@pytest.mark.parametrize("time_scale, second_time", [(1.0, "stride"), (1.0, "s"), (1000.0, "stride")])
def test_target_of_the_exact_model_is_u_star_plus_rho_times_the_conditional_noise(time_scale, second_time):
    """u_tgt - u* = rho(r, t) ((eps - x) - v*(z_t, t)) sample by sample (docs §3.11), for any time_scale and
    second time input: the JVP differentiates through c_in(t), c_noise and e2 and undoes them exactly."""
    fm, ip = oracle_flowmap(time_scale=time_scale, second_time=second_time)
    x, noise, r, t = draws(512, M, VAR, 0, ip)
    assert (r == t).any() and (r < t).any()
    z = ip.interpolate(x, noise, t)
    v = noise - x
    u, u_tgt = mean_flow_target(fm, z, r, t, v)
    rr, tt = r[:, None], t[:, None]
    assert torch.allclose(u, u_star(z, rr, tt, M, VAR), rtol=1e-12, atol=1e-12)
    rho = std_t(rr, VAR) / std_t(tt, VAR)
    expected = rho * (v - v_star(z, tt, M, VAR))
    assert torch.allclose(u_tgt - u, expected, rtol=1e-9, atol=1e-11)
    # the paper's ablated tangents (MF Table 1b) break the identity: the test sees the direction
    for tangent in ((v, 0.0, 0.0), (v, 1.0, 0.0), (v, 1.0, 1.0)):
        with torch.no_grad():
            du = SIGMA_D * fm.jvp(z, r, t, tangent).dG
        wrong = v - (t - r)[:, None] * du - u
        assert not torch.allclose(wrong[r < t], expected[r < t], rtol=1e-3, atol=1e-4)


def test_the_loss_of_the_exact_model_is_the_closed_form():
    """With p = 0 the loss is mean_i sum_d rho^2 ((eps - x) - v*)^2: e summed over dimensions, averaged over rows;
    with p > 0 each row is weighted by 1/(e + c)^p."""
    fm, ip = oracle_flowmap()
    x, noise, r, t = draws(256, M, VAR, 1, ip)
    z = ip.interpolate(x, noise, t)
    rr, tt = r[:, None], t[:, None]
    e = ((std_t(rr, VAR) / std_t(tt, VAR)) ** 2 * ((noise - x) - v_star(z, tt, M, VAR)) ** 2).sum(1)
    loss0, logs = MeanFlow(MeanFlowConfig(p=0.0), ip).loss_at(fm, x, noise, r, t)
    assert torch.allclose(loss0, e.mean(), rtol=1e-9)
    assert torch.allclose(logs["mf_sq_err"], e.mean(), rtol=1e-9)
    loss, _ = MeanFlow(MeanFlowConfig(p=0.5, c=0.1), ip).loss_at(fm, x, noise, r, t)
    assert torch.allclose(loss, (e / (e + 0.1).sqrt()).mean(), rtol=1e-9)


def test_single_point_data_gives_zero_loss_for_every_r_and_t():
    """v = 0: u* = (z_t - m)/t for every r and eps - x = v* exactly, so u_tgt = u* and the loss is 0 (§3.11)."""
    zero = torch.zeros(2, dtype=D64)
    fm, ip = oracle_flowmap(var=zero)
    x, noise, r, t = draws(512, M, zero, 2, ip)
    assert torch.equal(x, M.expand(512, 2))
    z = ip.interpolate(x, noise, t)
    u, u_tgt = mean_flow_target(fm, z, r, t, noise - x)
    assert torch.allclose(u, (z - M) / t[:, None], rtol=1e-12, atol=1e-12)
    assert torch.allclose(u_tgt, u, rtol=1e-9, atol=1e-10)
    loss, _ = MeanFlow(MeanFlowConfig(), ip).loss_at(fm, x, noise, r, t)
    assert loss.item() < 1e-15
    # a map that is not the solution (another point) is not a zero of the loss
    fm_wrong, _ = oracle_flowmap(m=M + 0.1, var=zero)
    assert MeanFlow(MeanFlowConfig(), ip).loss_at(fm_wrong, x, noise, r, t)[0].item() > 1e-3


@pytest.mark.parametrize("r, t", [(0.3, 0.8), (0.6, 0.6), (0.0, 1.0)])
def test_irreducible_loss_is_v_c2_V_r_over_V_t_squared(r, t):
    """E ||u_tgt - u*||^2 = sum_d v c^2 V_r / V_t^2 at fixed (r, t) (docs §3.11; at r = t the FM floor v c^2/V_t),
    by Monte Carlo with the exact model (unweighted: p = 0)."""
    fm, ip = oracle_flowmap()
    n = 100_000
    g = torch.Generator().manual_seed(3)
    x = M + VAR.sqrt() * torch.randn(n, 2, generator=g, dtype=D64)
    noise = SIGMA_D * torch.randn(n, 2, generator=g, dtype=D64)
    rs, ts = torch.full((n,), r, dtype=D64), torch.full((n,), t, dtype=D64)
    _, logs = MeanFlow(MeanFlowConfig(p=0.0), ip).loss_at(fm, x, noise, rs, ts)
    V = lambda tau: (1 - tau) ** 2 * VAR + tau**2 * SIGMA_D**2  # noqa: E731
    floor = (VAR * SIGMA_D**2 * V(r) / V(t) ** 2).sum().item()
    # e is a weighted sum of two chi^2_1 per row: its std is at most sqrt(2) times its mean
    assert abs(logs["mf_sq_err"].item() - floor) < 4 * 2**0.5 * floor / n**0.5


def test_one_pushforward_step_of_the_exact_model_maps_the_prior_onto_the_data():
    """f*(z_1, 0, 1) = m + (sqrt(v)/sigma_d) z_1: the recipe's sampler (pushforward, uniform, eps 0, T 1) with the
    exact model returns exact samples in one step (§3.11)."""
    fm, ip = oracle_flowmap()
    sampler = Pushforward("uniform")
    ts = sampler.schedule(ip, 1)
    assert ts.tolist() == [1.0, 0.0]
    z1 = SIGMA_D * torch.randn(1000, 2, generator=torch.Generator().manual_seed(4), dtype=D64)
    with torch.no_grad():
        x0 = sampler(fm, z1, ts.to(D64))
    assert torch.allclose(x0, M + VAR.sqrt() / SIGMA_D * z1, rtol=1e-12, atol=1e-12)
