"""The flow-matching plugin: its loss against the closed form, OT pairing, time sampling, registration."""
from __future__ import annotations

import math

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
    t = ip.T - (ip.T - ip.eps) * torch.rand(64, dtype=torch.float64)  # U(eps, T], never eps
    x_t = (1 - t)[:, None] * x + t[:, None] * noise
    G = net(x_t / (0.5 * torch.sqrt((1 - t) ** 2 + t**2))[:, None], 1000 * t)
    expected = ((0.5 * G - (noise - x)) ** 2).mean()  # || sigma_d G - (eps - x) ||^2
    assert torch.allclose(loss, expected, rtol=1e-10)


class Recording(Linear):
    """Linear, keeping the inputs (c_in x_t, c_noise) of every call."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, s=None, cond=None):
        self.seen.append((x.detach().clone(), t.detach().clone()))
        return super().forward(x, t, s, cond)


def G_by_hand(net, u, c_noise):
    with torch.no_grad():
        return u @ net.A.T + c_noise[:, None] * net.b / 1000


def test_loss_target_is_the_interpolant_velocity_for_cosine():
    """The CFM loss (Lipman et al. 2023, Eq. 9) on the conditional path x_t = alpha_t x + sigma_t eps under
    the VP-cosine path alpha = cos(pi t/2), sigma = sin(pi t/2) (IMM §2.1): E ||v_theta(x_t, t) -
    (alpha'_t x + sigma'_t eps)||^2 with alpha' = -pi/2 sin(pi t/2), sigma' = pi/2 cos(pi t/2), written out.
    Simple-EDM under VP (alpha^2 + sigma^2 = 1): c_in = 1/sigma_d and v_theta = d f/ds at s = t =
    sigma_d (sigma'_t alpha_t - alpha'_t sigma_t) G = sigma_d pi/2 G."""
    ip = VPCosine(0.5)
    net = Recording()
    fm = FlowMap(net, ip, "simple_edm", "none")
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(11)
    loss, _ = FlowMatching(FMConfig(), ip).loss(fm, Batch(x), 0)
    torch.manual_seed(11)  # replay: noise, then times
    noise = 0.5 * torch.randn(64, 2, dtype=torch.float64)
    t = ip.T - (ip.T - ip.eps) * torch.rand(64, dtype=torch.float64)  # U(eps, T], never eps
    half_pi_t = 0.5 * math.pi * t
    x_t = torch.cos(half_pi_t)[:, None] * x + torch.sin(half_pi_t)[:, None] * noise
    (u, c_noise), = net.seen  # what the network saw: c_in x_t and 1000 t
    assert torch.allclose(u, x_t / 0.5, rtol=1e-12) and torch.allclose(c_noise, 1000 * t, rtol=1e-12)
    v = 0.5 * (math.pi / 2) * G_by_hand(net, u, c_noise)
    d_alpha, d_sigma = -0.5 * math.pi * torch.sin(half_pi_t), 0.5 * math.pi * torch.cos(half_pi_t)
    u_target = d_alpha[:, None] * x + d_sigma[:, None] * noise
    expected = ((v - u_target) ** 2).mean()
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)


def test_logit_normal_times_are_sigmoid_of_a_normal_clipped_to_the_range():
    """Logit-normal p(t) (SD3, Esser et al. 2024, §3.1, Eq. 19: pi_ln(t; m, s)): logit(t) ~ N(m, s^2),
    checked by a KS test on unclipped draws; then clipped to [eps, T] (values outside become eps or T,
    with the masses Phi((logit eps - m)/s) and 1 - Phi((logit T - m)/s))."""
    from scipy import stats

    m, s, n = 0.4, 1.7, 20_000
    cfg = FMConfig(time_sampling="logit_normal", logit_mean=m, logit_std=s)
    torch.manual_seed(3)
    t = FlowMatching(cfg, OTFM(0.5, eps=0.0, T=1.0)).sample_t(n, "cpu", torch.float64)  # nothing to clip
    z = torch.log(t / (1 - t)).numpy()
    assert stats.kstest(z, "norm", args=(m, s)).pvalue > 1e-3
    assert stats.kstest(z, "norm", args=(m, 1.1 * s)).pvalue < 1e-6  # the test sees a 10% wrong scale
    assert stats.kstest(z, "norm", args=(m + 0.1, s)).pvalue < 1e-6
    assert abs(z.mean() - m) < 4 * s / n**0.5 and abs(z.std() / s - 1) < 0.03
    # the same draws clipped to [eps, T]: values outside become eps or T, the rest are kept
    lo, hi = 0.2, 0.7
    torch.manual_seed(3)
    clipped = FlowMatching(cfg, OTFM(0.5, eps=lo, T=hi)).sample_t(n, "cpu", torch.float64)
    assert torch.equal(clipped[t < lo], torch.full_like(clipped[t < lo], lo))
    assert torch.equal(clipped[t > hi], torch.full_like(clipped[t > hi], hi))
    inside = (t >= lo) & (t <= hi)
    assert torch.equal(clipped[inside], t[inside])
    p_lo = stats.norm.cdf(math.log(lo / (1 - lo)), m, s)
    p_hi = stats.norm.sf(math.log(hi / (1 - hi)), m, s)
    for frac, p in (((clipped == lo).double().mean().item(), p_lo), ((clipped == hi).double().mean().item(), p_hi)):
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_sigma_adds_gaussian_noise_to_x_t():
    """I-CFM (Tong et al. 2024, §3.2.2: p_t(x | x0, x1) = N(t x1 + (1 - t) x0, sigma^2 I), u_t = x1 - x0):
    x_t = alpha_t x + sigma_t eps + sigma z, z ~ N(0, I), with the unchanged target alpha'_t x + sigma'_t eps
    = eps - x under OT-FM, and the CFM loss (Lipman et al. 2023, Eq. 9) with Euler-FM v_theta = sigma_d G.
    The draws are replayed in the objective's order: noise, times, then z."""
    ip = OTFM(0.5)
    net = Linear()
    fm = FlowMap(net, ip, "euler_fm", "none")
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sigma = 0.3
    torch.manual_seed(9)
    loss, _ = FlowMatching(FMConfig(sigma=sigma), ip).loss(fm, Batch(x), 0)
    torch.manual_seed(9)
    noise = 0.5 * torch.randn(64, 2, dtype=torch.float64)
    t = ip.T - (ip.T - ip.eps) * torch.rand(64, dtype=torch.float64)  # U(eps, T], never eps
    z = torch.randn(64, 2, dtype=torch.float64)
    x_t = (1 - t)[:, None] * x + t[:, None] * noise + sigma * z
    c_in = 1 / (0.5 * torch.sqrt((1 - t) ** 2 + t**2))
    v = 0.5 * G_by_hand(net, c_in[:, None] * x_t, 1000 * t)
    expected = ((v - (noise - x)) ** 2).mean()
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    without = ((0.5 * G_by_hand(net, c_in[:, None] * (x_t - sigma * z), 1000 * t) - (noise - x)) ** 2).mean()
    assert not torch.allclose(loss, without, rtol=1e-3)


def test_loss_uses_the_minibatch_ot_pairing():
    """OT-CFM (Tong et al. 2024, §3.2.3, with a minibatch OT plan): the noise is re-paired with the data by
    the exact minibatch OT plan on squared Euclidean cost (an assignment: scipy's linear_sum_assignment on
    a cost matrix built in the test), then the CFM loss (Lipman et al. 2023, Eq. 9)
    mean ||sigma_d G - (eps_pi(i) - x_i)||^2 under OT-FM / Euler-FM."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    ip = OTFM(0.5)
    net = Linear()
    fm = FlowMap(net, ip, "euler_fm", "none")
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(13)
    loss, _ = FlowMatching(FMConfig(minibatch_ot=True), ip).loss(fm, Batch(x), 0)
    torch.manual_seed(13)  # replay: noise, (pairing), then times
    noise = 0.5 * torch.randn(32, 2, dtype=torch.float64)
    t = ip.T - (ip.T - ip.eps) * torch.rand(32, dtype=torch.float64)  # U(eps, T], never eps
    xn, en = x.numpy(), noise.numpy()
    cost = np.array([[((xn[i] - en[j]) ** 2).sum() for j in range(32)] for i in range(32)])
    rows, cols = linear_sum_assignment(cost)
    assert (rows == np.arange(32)).all() and (cols != np.arange(32)).any()
    assert (cols[cols] != np.arange(32)).any()  # not an involution: the inverse pairing would differ
    paired = noise[torch.as_tensor(cols)]

    def fm_loss(eps):
        x_t = (1 - t)[:, None] * x + t[:, None] * eps
        c_in = 1 / (0.5 * torch.sqrt((1 - t) ** 2 + t**2))
        return ((0.5 * G_by_hand(net, c_in[:, None] * x_t, 1000 * t) - (eps - x)) ** 2).mean()

    assert torch.allclose(loss, fm_loss(paired), rtol=1e-10, atol=0)
    assert not torch.allclose(loss, fm_loss(noise), rtol=1e-3)


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


def test_uniform_times_never_hit_eps_so_identity_never_divides_by_zero():
    """With eps = 0 a time of exactly 0 divides by sigma_0 = 0 under the identity parameterisation: the largest
    float32 u below 1 still gives t = T (1 - u) > 0, and u = 0 gives T."""
    ip = OTFM(0.5, eps=0.0)
    fm_obj = FlowMatching(FMConfig(), ip)
    torch.manual_seed(0)
    t = fm_obj.sample_t(100_000, "cpu")
    assert bool((t > 0).all()) and bool((t <= ip.T).all())
    assert ip.T - (ip.T - ip.eps) * torch.tensor(1.0 - 2.0**-24) > 0  # the extreme draw
