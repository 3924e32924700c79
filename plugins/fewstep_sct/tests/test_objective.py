"""The sCT loss (fewstep_sct/objective.py) against closed forms: the TrigFlow mapping, the time sampler, the
warm-up, both forms of the tangent g, the TrigFlow Gaussian oracle of docs/objectives.md §4.8, the single
point, the loss and its gradients written out by hand, the shared dropout mask."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewstep.data.base import Batch
from fewstep.flowmap import FlowMap
from fewstep.interpolants import VPCosine
from fewstep.networks.mlp import MLP
from fewstep_sct import TIME_SCALE, SCTConfig
from fewstep_sct.objective import (
    SCT,
    normalise_tangent,
    sample_times,
    tangent_from_jvp_f,
    warmup_factor,
)

F64 = torch.float64
SD = 0.5
T_MAX = 0.99602
M = torch.tensor([0.3, -0.5], dtype=F64)  # data N(m, v) per dimension (D = 2)
V = torch.tensor([0.2, 0.05], dtype=F64)


def trig(tau):
    """TrigFlow time t = pi tau / 2 and (cos t, sin t) as columns [B, 1]."""
    t = 0.5 * math.pi * tau
    return t, torch.cos(t)[:, None], torch.sin(t)[:, None]


class TrigFlowGaussian(nn.Module):
    """The exact model of data N(m, v) as the backbone (docs/objectives.md §4.8): V_t = cos^2 t v + sin^2 t sigma_d^2,
    f*(x_t, t) = m + sqrt(v / V_t)(x_t - cos t m), and G*(u, c) = F*(x_t, t) = (cos t x_t - f*) / (sigma_d sin t)
    with x_t = sigma_d u (c_in = 1/sigma_d under VP) and t = c (c_noise = (pi/2) tau). ``scale`` (1) multiplies F*:
    a parameter with dF/dscale = F*."""

    def __init__(self, m, v):
        super().__init__()
        self.m, self.v = m, v
        self.scale = nn.Parameter(torch.ones((), dtype=F64))

    def forward(self, u, c, s=None, cond=None):
        assert s is None  # second_time none
        x, t = SD * u, c[:, None]
        V_t = torch.cos(t) ** 2 * self.v + torch.sin(t) ** 2 * SD**2
        f = self.m + torch.sqrt(self.v) / torch.sqrt(V_t) * (x - torch.cos(t) * self.m)  # sqrt(v) constant: v = 0 ok
        return self.scale * (torch.cos(t) * x - f) / (SD * torch.sin(t))


def v_star(x_t, t, m, v):
    """The diffusion (PF-ODE) velocity of TrigFlow for data N(m, v) (docs/objectives.md §4.8):
    -sin t m + (sin t cos t (sigma_d^2 - v) / V_t)(x_t - cos t m)."""
    t = t[:, None]
    V_t = torch.cos(t) ** 2 * v + torch.sin(t) ** 2 * SD**2
    return -torch.sin(t) * m + torch.sin(t) * torch.cos(t) * (SD**2 - v) / V_t * (x_t - torch.cos(t) * m)


class Diffusion(nn.Module):
    """sigma_d G = v*(x_t, t): the fixed point of the r = 0 (diffusion) phase."""

    def __init__(self, m, v):
        super().__init__()
        self.m, self.v = m, v

    def forward(self, u, c, s=None, cond=None):
        return v_star(SD * u, c, self.m, self.v) / SD


def flowmap(net, eps=0.0, T=T_MAX):
    return FlowMap(net, VPCosine(SD, eps, T), "simple_edm", "none", time_scale=TIME_SCALE)


def objective(**fields):
    return SCT(SCTConfig(**fields), VPCosine(SD, 0.0, T_MAX))


def path(n, tau, seed=0, m=M, v=V):
    """x ~ N(m, v), z ~ N(0, sigma_d^2), x_tau on the conditional path and dx/dtau = (pi/2)(cos t z - sin t x)."""
    g = torch.Generator().manual_seed(seed)
    x = m + v.sqrt() * torch.randn(n, 2, generator=g, dtype=F64)
    z = SD * torch.randn(n, 2, generator=g, dtype=F64)
    _, cos, sin = trig(tau)
    return x, z, cos * x + sin * z, 0.5 * math.pi * (cos * z - sin * x)


# --- mapping, times, warm-up ----------------------------------------------------------------------
class Recording(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, u, c, s=None, cond=None):
        self.seen.append((u.detach().clone(), c.detach().clone(), s))
        return torch.sin(3 * u) + c[:, None] ** 2


def test_the_flow_map_at_s_0_is_the_sCM_consistency_function_with_c_noise_t():
    """docs/objectives.md §4.1: f(x_tau, 0, tau) = cos t x - sin t sigma_d F(x/sigma_d, c_noise = t), t = pi tau/2:
    the network sees x / sigma_d and c_noise = t exactly when time_scale = pi/2, and no second time."""
    net = Recording()
    fm = flowmap(net)
    x = torch.randn(5, 2, dtype=F64)
    tau = torch.tensor([0.0, 0.1, 0.5, 0.9, T_MAX], dtype=F64)
    out = fm.f(x, 0.0, tau)
    (u, c, s), = net.seen
    t, cos, sin = trig(tau)
    assert s is None and torch.allclose(u, x / SD, rtol=1e-15) and torch.allclose(c, t, rtol=1e-15)
    assert torch.allclose(out, cos * x - sin * SD * (torch.sin(3 * x / SD) + t[:, None] ** 2), rtol=1e-13, atol=1e-15)


def test_times_are_log_normal_in_edm_sigma():
    """sCM Alg. 1: ln(sigma_d tan t) ~ N(P_mean, P_std^2) (KS test on unclipped draws, one that sees a 10% wrong
    scale); then tau = 2t/pi clipped into [eps, T] (values outside become eps or T) and t = pi tau / 2."""
    from scipy import stats

    n, pm, ps = 20_000, -1.0, 1.4
    torch.manual_seed(3)
    tau, t = sample_times(VPCosine(SD, 0.0, 1.0), n, pm, ps)
    assert torch.allclose(t, 0.5 * math.pi * tau, rtol=1e-15)
    log_sigma = torch.log(SD * torch.tan(t)).numpy()
    assert stats.kstest(log_sigma, "norm", args=(pm, ps)).pvalue > 1e-3
    assert stats.kstest(log_sigma, "norm", args=(pm, 1.1 * ps)).pvalue < 1e-6
    assert stats.kstest(log_sigma, "norm", args=(pm + 0.1, ps)).pvalue < 1e-6
    torch.manual_seed(3)
    lo, hi = 0.2, 0.8
    clipped, t_c = sample_times(VPCosine(SD, lo, hi), n, pm, ps)
    assert torch.equal(clipped[tau < lo], torch.full_like(clipped[tau < lo], lo))
    assert torch.equal(clipped[tau > hi], torch.full_like(clipped[tau > hi], hi))
    inside = (tau >= lo) & (tau <= hi)
    assert torch.equal(clipped[inside], tau[inside]) and 0 < inside.double().mean() < 1
    assert torch.allclose(t_c, 0.5 * math.pi * clipped, rtol=1e-15)
    obj = objective(p_mean=0.5, p_std=0.3)  # the Config's values are the ones drawn from
    torch.manual_seed(4)
    _, t_cfg = obj.sample_times(n)
    assert abs(torch.log(SD * torch.tan(t_cfg)).mean().item() - 0.5) < 4 * 0.3 / n**0.5


def test_warmup_factor_is_min_1_step_over_H():
    assert [warmup_factor(k, 10_000) for k in (0, 2_500, 10_000, 30_000)] == [0.0, 0.25, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_normalisation_options():
    """g / (||g||_2 + c) per sample over all its elements (sCM Alg. 1), clip(g, -1, 1), or g (Fig. 5a)."""
    g = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[-2.0, 0.5], [0.0, 0.0]]])
    out = normalise_tangent(g, 0.1)
    assert torch.allclose(out[0], g[0] / 5.1) and torch.equal(out[1], g[1])
    assert torch.allclose(out[2], g[2] / (math.sqrt(4.25) + 0.1))
    assert torch.equal(normalise_tangent(g, 0.1, "clip")[2], torch.tensor([[-1.0, 0.5], [0.0, 0.0]]))
    assert torch.equal(normalise_tangent(g, 0.1, "none"), g)
    with pytest.raises(ValueError, match="unknown tangent normalisation"):
        normalise_tangent(g, 0.1, "norm")


# --- the tangent: JVP, both forms ----------------------------------------------------------------------
def mlp_flowmap(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    net = MLP((2,), width=32, depth=2, emb_dim=16, second_time=False, dropout=dropout).double()
    return flowmap(net)


def test_jvp_derivatives_are_d_dt_along_the_path_by_finite_differences():
    """F^- = G and f^- at (x_t, 0, tau), and dF/dt, df/dt the total t-derivatives along x_t = cos t x + sin t z
    (t = pi tau / 2: d/dt = (2/pi) d/dtau), against central differences of the plain passes."""
    fm = mlp_flowmap()
    tau = torch.linspace(0.05, 0.95, 8, dtype=F64)
    x, z, x_t, dx_dtau = path(8, tau)
    tg = objective().tangent(fm, x_t, dx_dtau, tau, 1.0)
    _, cos, sin = trig(tau)
    assert torch.allclose(tg.dx_dt, cos * z - sin * x, rtol=1e-13)
    assert torch.allclose(tg.F, fm.G(x_t, 0.0, tau), rtol=1e-13) and torch.allclose(tg.f, fm.f(x_t, 0.0, tau))
    h = 1e-5  # in t

    def along(fn, e):
        ta = tau + 2 / math.pi * e
        _, c, s = trig(ta)
        return fn(c * x + s * z, 0.0, ta)

    for fn, deriv in ((fm.G, tg.dF_dt), (fm.f, tg.df_dt)):
        fd = (along(fn, h) - along(fn, -h)) / (2 * h)
        assert torch.allclose(deriv, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("r", [0.0, 0.3, 1.0])
def test_alg1_form_equals_the_jvp_f_form(r):
    """g from F^-, dF^-/dt (sCM Alg. 1 step 4) = -cos^2 t (sigma_d F - dx/dt) + r [cos t df/dt + cos^2 t (sigma_d F -
    dx/dt)] from the flow map's JVP (docs/objectives.md §4.2, last paragraph), on an MLP; at r = 1, cos t df/dt."""
    fm = mlp_flowmap(1)
    tau = torch.linspace(0.02, T_MAX, 16, dtype=F64)
    _, _, x_t, dx_dtau = path(16, tau, seed=2)
    tg = objective().tangent(fm, x_t, dx_dtau, tau, r)
    other = tangent_from_jvp_f(SD, tg.t, tg.dx_dt, tg.F, tg.df_dt, r)
    assert torch.allclose(tg.g, other, rtol=1e-12, atol=1e-14)
    assert tg.g.abs().max() > 1e-3
    if r == 1.0:
        assert torch.allclose(tg.g, torch.cos(tg.t)[:, None] * tg.df_dt, rtol=1e-12, atol=1e-14)


# --- the TrigFlow Gaussian oracle (docs/objectives.md §4.8) -------------------------------------------------
def test_gaussian_oracle_g_is_cos_t_sqrt_v_over_V_times_the_velocity_noise():
    """theta^- = theta* (exact f* as the network) and r = 1: g = cos t sqrt(v/V_t)(dx_t/dt - v*(x_t, t)) sample by
    sample, which is also cos t df*/dt with df*/dt differentiated by hand: d/dt [m + sqrt(v/V_t)(x_t - cos t m)] =
    -(1/2) sqrt(v) V_t^{-3/2} V_t' (x_t - cos t m) + sqrt(v/V_t)(dx_t/dt + sin t m),
    V_t' = 2 sin t cos t (sigma_d^2 - v)."""
    fm = flowmap(TrigFlowGaussian(M, V))
    tau = torch.rand(512, generator=torch.Generator().manual_seed(1), dtype=F64) * T_MAX
    x, z, x_t, dx_dtau = path(512, tau, seed=3)
    tg = objective().tangent(fm, x_t, dx_dtau, tau, 1.0)
    t, cos, sin = trig(tau)
    V_t = cos**2 * V + sin**2 * SD**2
    dx_dt = cos * z - sin * x
    expected = cos * torch.sqrt(V / V_t) * (dx_dt - v_star(x_t, t, M, V))
    assert torch.allclose(tg.g, expected, rtol=1e-10, atol=1e-13)
    dV = 2 * sin * cos * (SD**2 - V)
    df_dt = -0.5 * V.sqrt() * V_t**-1.5 * dV * (x_t - cos * M) + torch.sqrt(V / V_t) * (dx_dt + sin * M)
    assert torch.allclose(tg.g, cos * df_dt, rtol=1e-10, atol=1e-13)


def posterior_path(x_t_value, t, n, seed=0):
    """Samples (x, z) of the TrigFlow Gaussian given x_t = x_t_value at TrigFlow time t: x | x_t ~ N(m + cos t v/V_t
    (x_t - cos t m), v sin^2 t sigma_d^2 / V_t), z = (x_t - cos t x) / sin t. Returns x_t [n, 2], dx/dtau, tau."""
    g = torch.Generator().manual_seed(seed)
    c, s = math.cos(t), math.sin(t)
    V_t = c**2 * V + s**2 * SD**2
    mean = M + c * V / V_t * (x_t_value - c * M)
    x = mean + torch.sqrt(V * s**2 * SD**2 / V_t) * torch.randn(n, 2, generator=g, dtype=F64)
    z = (x_t_value - c * x) / s
    x_t = x_t_value.expand(n, 2).clone()
    return x_t, 0.5 * math.pi * (c * z - s * x), torch.full((n,), 2 * t / math.pi, dtype=F64)


def test_gaussian_oracle_fixed_point_conditional_mean_zero_with_and_without_normalisation():
    """E[g | x_t] = 0 at theta* (r = 1), E[g^2 | x_t] = cos^2 t v^2 sigma_d^2 / V_t^2 per dimension, and the normalised
    g / (||g|| + c), an odd function of a zero-mean Gaussian, keeps E[. | x_t] = 0 (docs/objectives.md §4.8)."""
    t, n = 0.9, 40_000
    x_t_value = torch.tensor([0.4, -0.2], dtype=F64)
    x_t, dx_dtau, tau = posterior_path(x_t_value, t, n)
    tg = objective().tangent(flowmap(TrigFlowGaussian(M, V)), x_t, dx_dtau, tau, 1.0)
    for g in (tg.g, normalise_tangent(tg.g, 0.1)):
        se = g.std(0) / n**0.5
        assert bool((g.mean(0).abs() < 5 * se).all()), (g.mean(0), se)
    V_t = math.cos(t) ** 2 * V + math.sin(t) ** 2 * SD**2
    expected_sq = math.cos(t) ** 2 * V**2 * SD**2 / V_t**2
    assert torch.allclose(tg.g.pow(2).mean(0), expected_sq, rtol=0.03)


def test_at_r_0_the_fixed_point_is_the_diffusion_velocity_not_f_star():
    """r = 0: g_0 = -cos^2 t (sigma_d F^- - dx_t/dt). At theta* its conditional mean is -cos^2 t (sigma_d F* - v*) != 0;
    with sigma_d F = v*(x_t, t) (the diffusion model) g_0 = cos^2 t (dx_t/dt - v*) sample by sample, mean 0."""
    t, n = 0.9, 40_000
    x_t_value = torch.tensor([0.4, -0.2], dtype=F64)
    x_t, dx_dtau, tau = posterior_path(x_t_value, t, n, seed=1)
    obj = objective()
    exact = obj.tangent(flowmap(TrigFlowGaussian(M, V)), x_t, dx_dtau, tau, 0.0).g
    F_star = TrigFlowGaussian(M, V)(x_t[:1] / SD, tau[:1] * math.pi / 2).detach()[0]
    tt = torch.tensor([t], dtype=F64)
    v_at = v_star(x_t[:1], tt, M, V)[0]
    shift = -math.cos(t) ** 2 * (SD * F_star - v_at)
    se = exact.std(0) / n**0.5
    assert bool((shift.abs() > 20 * se).all())  # a real bias, not noise
    assert bool(((exact.mean(0) - shift).abs() < 5 * se).all())
    diff = obj.tangent(flowmap(Diffusion(M, V)), x_t, dx_dtau, tau, 0.0)
    assert torch.allclose(diff.g, math.cos(t) ** 2 * (diff.dx_dt - v_at), rtol=1e-10, atol=1e-13)
    assert bool((diff.g.mean(0).abs() < 5 * diff.g.std(0) / n**0.5).all())


@pytest.mark.parametrize("r", [0.0, 0.5, 1.0])
def test_single_point_data_gives_g_zero_and_no_gradient(r):
    """v = 0: f* = m, sigma_d F* = dx_t/dt exactly, so g = 0 for every r, and the loss has no theta-gradient."""
    zero = torch.zeros(2, dtype=F64)
    net = TrigFlowGaussian(M, zero)
    fm = flowmap(net)
    tau = torch.linspace(0.01, T_MAX, 64, dtype=F64)
    _, _, x_t, dx_dtau = path(64, tau, m=M, v=zero)
    tg = objective().tangent(fm, x_t, dx_dtau, tau, r)
    assert torch.allclose(tg.f, M.expand(64, 2), rtol=1e-12) and tg.g.abs().max() < 1e-12
    obj = objective(warmup_steps=10)
    torch.manual_seed(0)
    loss, _ = obj.loss(fm, Batch(M.expand(256, 2).clone()), int(10 * r))
    loss.backward()
    assert abs(net.scale.grad.item()) < 1e-12
    net.scale.grad = None  # the same with Gaussian data: a real gradient (the check can fail)
    fm_g = flowmap(TrigFlowGaussian(M, V))
    torch.manual_seed(0)
    obj.loss(fm_g, Batch(M + V.sqrt() * torch.randn(256, 2, dtype=F64)), 5)[0].backward()
    assert abs(fm_g.net.scale.grad.item()) > 1e-4


# --- the loss and its gradients, by hand ---------------------------------------------------------------------
class Linear(nn.Module):
    """G(u, c) = A u + c b: dG/dA and dG/db are u and c."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(torch.randn(2, 2, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(2, generator=g, dtype=F64))

    def forward(self, u, c, s=None, cond=None):
        return u @ self.A.T + c[:, None] * self.b


def test_loss_and_gradients_equal_the_hand_computation():
    """Alg. 1 written out for G = A u + c b, r = 0.3 (step 30 of H = 100), a non-zero w_phi:
    L = mean (e^w/D) ||g_n||^2 - w (F_theta = F^-), dL/dA = -(2/(D B)) sum e^{w_i} g_n,i u_i^T, dL/db = -(2/(D B))
    sum e^{w_i} t_i g_n,i, dL/dw_i = ((e^{w_i}/D) ||g_n,i||^2 - 1)/B. Draws replayed: times, then noise."""
    B, D, pm, ps, c = 64, 2, -1.0, 1.4, 0.1
    net = Linear()
    fm = flowmap(net)
    obj = objective(warmup_steps=100)
    w_phi = obj.w_phi.double()
    with torch.no_grad():
        w_phi.a.copy_(0.05 * torch.randn(w_phi.a.shape, generator=torch.Generator().manual_seed(9), dtype=F64))
        w_phi.b.fill_(0.4)
    x = M + V.sqrt() * torch.randn(B, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.manual_seed(7)
    loss, logs = obj.loss(fm, Batch(x), 30)
    loss.backward()

    torch.manual_seed(7)
    n = torch.randn(B, dtype=F64)
    tau = (2 / math.pi * torch.atan(torch.exp(pm + ps * n) / SD)).clamp(0.0, T_MAX)
    z = SD * torch.randn(B, 2, dtype=F64)
    t, cos, sin = trig(tau)
    x_t, dx_dt = cos * x + sin * z, cos * z - sin * x
    with torch.no_grad():
        A, b = net.A, net.b
        u = x_t / SD
        F = u @ A.T + t[:, None] * b
        dF_dt = (dx_dt / SD) @ A.T + b
        g = -cos**2 * (SD * F - dx_dt) - 0.3 * cos * sin * (x_t + SD * dF_dt)
        g_norm = g.norm(dim=1, keepdim=True)
        g_n = g / (g_norm + c)
        phi = math.sqrt(2) * torch.cos(2 * math.pi * (t[:, None] * w_phi.freqs.double() + w_phi.phases.double()))
        w = phi @ w_phi.a + w_phi.b
        e_w = torch.exp(w)
        expected = (e_w * (g_n**2).sum(1) / D - w).mean()
        dA = -(2 / (D * B)) * (e_w[:, None, None] * g_n[:, :, None] * u[:, None, :]).sum(0)
        db = -(2 / (D * B)) * (e_w[:, None] * t[:, None] * g_n).sum(0)
        dw = (e_w * (g_n**2).sum(1) / D - 1) / B
    assert torch.allclose(loss, expected, rtol=1e-12)
    assert torch.allclose(net.A.grad, dA, rtol=1e-10) and torch.allclose(net.b.grad, db, rtol=1e-10)
    assert torch.allclose(w_phi.b.grad, dw.sum(), rtol=1e-10)
    assert torch.allclose(w_phi.a.grad, (dw[:, None] * phi).sum(0), rtol=1e-9, atol=1e-14)
    assert logs["warmup_r"] == 0.3 and torch.allclose(logs["tangent_norm"], g_norm.mean())
    assert torch.allclose(logs["w_phi"], w.mean())


def test_without_adaptive_weighting_the_loss_is_the_plain_squared_tangent():
    """adaptive_weighting false (sCM Fig. 5b ablation): w = 0, L = mean ||g_n||^2 / D, nothing of its own to train."""
    obj = objective(adaptive_weighting=False, warmup_steps=0)
    assert obj.trainable(torch.device("cpu")) == [] and obj.state_dict() == {}
    fm = flowmap(Linear())
    x = M + V.sqrt() * torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.manual_seed(3)
    loss, logs = obj.loss(fm, Batch(x), 0)
    torch.manual_seed(3)
    tau, _ = obj.sample_times(32)
    z = obj.ip.prior((32, 2), dtype=F64)
    x_t, dx_dtau = obj.ip.interpolate(x, z, tau), obj.ip.velocity(x, z, tau)
    g_n = normalise_tangent(obj.tangent(fm, x_t, dx_dtau, tau, 1.0).g, 0.1)
    assert torch.allclose(loss, (g_n**2).sum(1).mean() / 2, rtol=1e-12) and logs["w_phi"] == 0


@pytest.mark.parametrize("shared", [True, False])
def test_the_grad_pass_shares_the_jvp_passs_dropout_mask(shared):
    """With shared_dropout the RNG is replayed, so F_theta = F^- in value and L = mean (e^0/D) ||g_n||^2 exactly
    (w = 0 at the start); without it the masks differ and F_theta - F^- adds to the residual."""
    fm = mlp_flowmap(2, dropout=0.5)
    fm.net.train()
    obj = objective(shared_dropout=shared, warmup_steps=0)
    x = M + V.sqrt() * torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.manual_seed(11)
    loss, _ = obj.loss(fm, Batch(x), 0)
    torch.manual_seed(11)  # replay up to the JVP pass, which draws the dropout mask
    tau, _ = obj.sample_times(64)
    z = obj.ip.prior((64, 2), dtype=F64)
    x_t, dx_dtau = obj.ip.interpolate(x, z, tau), obj.ip.velocity(x, z, tau)
    g_n = normalise_tangent(obj.tangent(fm, x_t, dx_dtau, tau, 1.0).g, 0.1)
    only_tangent = (g_n**2).sum(1).mean() / 2
    if shared:
        assert torch.allclose(loss, only_tangent, rtol=1e-12)
    else:
        assert not torch.allclose(loss, only_tangent, rtol=1e-3)


def test_w_phi_is_trainable_and_stateful_in_place():
    """protocols.Trainable / Stateful: trainable() returns w_phi's parameters (the optimiser's references), and
    loading a state writes into those same tensors."""
    from fewstep.protocols import Stateful, Trainable

    obj = objective()
    assert isinstance(obj, Trainable) and isinstance(obj, Stateful)
    params = obj.trainable(torch.device("cpu"))
    assert [p.shape for p in params] == [(128,), ()] and all(p.requires_grad for p in params)
    state = obj.state_dict()
    other = objective()
    with torch.no_grad():
        other.w_phi.a.fill_(0.25)
    obj.load_state_dict(other.state_dict())
    assert params[0] is obj.w_phi.a and bool((params[0] == 0.25).all())
    assert torch.equal(state["w_phi"]["a"], torch.zeros(128))  # a copy, not a view of the live weights
