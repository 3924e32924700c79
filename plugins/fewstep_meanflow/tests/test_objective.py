"""The MeanFlow loss: the adaptive weight, the loss and its gradient against a hand computation, the guided target
(its fixed point, interval and dropped rows), the draws of ``loss``, precision, flow-map errors and a short run."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.testing import ProbeNet
from fewstep_meanflow import MeanFlowConfig
from fewstep_meanflow.objective import MeanFlow, adaptive_weight, guided_velocity

D64 = torch.float64
SIGMA_D = 0.5


def test_adaptive_weight_is_one_over_e_plus_c_to_the_p_without_gradient():
    """w = 1/(e + c)^p (MF §4, Table 1e): by hand for e = 3, 0 with c = 1, p = 0.5 -> 1/2, 1; p = 0 -> 1."""
    e = torch.tensor([3.0, 0.0], dtype=D64, requires_grad=True)
    w = adaptive_weight(e, 0.5, 1.0)
    assert torch.allclose(w, torch.tensor([0.5, 1.0], dtype=D64), rtol=1e-15) and not w.requires_grad
    assert torch.equal(adaptive_weight(e, 0.0, 1e-3), torch.ones(2, dtype=D64))
    assert adaptive_weight(e, 0.75, 1e-3)[0].item() == pytest.approx(3.001 ** -0.75, rel=1e-14)


class Linear(torch.nn.Module):
    """G = A x_in + b t_in + k h_in: simple enough to write u, du/dt and the gradients by hand."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=D64))
        self.b = torch.nn.Parameter(torch.randn(2, generator=g, dtype=D64))
        self.k = torch.nn.Parameter(torch.randn(2, generator=g, dtype=D64))

    def forward(self, x, t, s=None, cond=None):
        return x @ self.A.T + t[:, None] * self.b + s[:, None] * self.k


def batch_of(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = SIGMA_D * torch.randn(n, 2, generator=g, dtype=D64)
    noise = SIGMA_D * torch.randn(n, 2, generator=g, dtype=D64)
    t = torch.rand(n, generator=g, dtype=D64)
    r = torch.where(torch.arange(n) % 4 == 0, t, t * torch.rand(n, generator=g, dtype=D64))  # r = t on 1/4 of rows
    return x, noise, r, t


@pytest.mark.parametrize("p, c", [(0.75, 1e-3), (1.0, 0.01), (0.0, 1e-3)])
def test_loss_and_gradient_equal_the_hand_computation(p, c):
    """Euler-FM, stride, time_scale 1: u = sigma_d (A c_in(t) z + b t + k (t - r)), c_in(t) = 1/(sigma_d n(t)),
    n(t) = sqrt((1 - t)^2 + t^2), so along (v, 0, 1): du/dt = sigma_d (A (c_in'(t) z + c_in(t) v) + b + k) with
    c_in'(t) = -(2t - 1)/(sigma_d n(t)^3). u_tgt = v - (t - r) du/dt, Delta = u - u_tgt, e = ||Delta||^2,
    w = (e + c)^-p, loss = mean(w e), and the gradient is (1/B) sum_i 2 w_i (du_i/dtheta)^T Delta_i
    (MF §4: no second-order term): dA = mean 2 w sigma_d Delta (c_in z)^T, db = mean 2 w sigma_d t Delta,
    dk = mean 2 w sigma_d (t - r) Delta."""
    net = Linear()
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(net, ip, "euler_fm", "stride", time_scale=1.0)
    x, noise, r, t = batch_of()
    loss, _ = MeanFlow(MeanFlowConfig(p=p, c=c), ip).loss_at(fm, x, noise, r, t)
    loss.backward()

    A, b, k = (q.detach() for q in (net.A, net.b, net.k))
    z = (1 - t)[:, None] * x + t[:, None] * noise
    v = noise - x
    n_t = torch.sqrt((1 - t) ** 2 + t**2)
    c_in, dc_in = 1 / (SIGMA_D * n_t), -(2 * t - 1) / (SIGMA_D * n_t**3)
    u = SIGMA_D * ((c_in[:, None] * z) @ A.T + t[:, None] * b + (t - r)[:, None] * k)
    du_dt = SIGMA_D * ((dc_in[:, None] * z + c_in[:, None] * v) @ A.T + b + k)
    delta = u - (v - (t - r)[:, None] * du_dt)
    e = (delta**2).sum(1)
    w = (e + c) ** -p
    assert torch.allclose(loss, (w * e).mean(), rtol=1e-12)
    coef = 2 * w[:, None] * SIGMA_D * delta / len(e)  # [B, 2]
    assert torch.allclose(net.A.grad, coef.T @ (c_in[:, None] * z), rtol=1e-10, atol=1e-14)
    assert torch.allclose(net.b.grad, (coef * t[:, None]).sum(0), rtol=1e-10, atol=1e-14)
    assert torch.allclose(net.k.grad, (coef * (t - r)[:, None]).sum(0), rtol=1e-10, atol=1e-14)

    # the gradient a target that kept its graph would give is another one: the test sees a leak
    A2, b2, k2 = (q.detach().clone().requires_grad_(True) for q in (net.A, net.b, net.k))
    u2 = SIGMA_D * ((c_in[:, None] * z) @ A2.T + t[:, None] * b2 + (t - r)[:, None] * k2)
    du2 = SIGMA_D * ((dc_in[:, None] * z + c_in[:, None] * v) @ A2.T + b2 + k2)
    ((u2 - (v - (t - r)[:, None] * du2)) ** 2).sum(1).mul(w).mean().backward()
    assert not torch.allclose(A2.grad, net.A.grad, rtol=1e-3)


# --- classifier-free guidance in the target (MF §4.2, Eq. 21; docs/objectives.md §3.5) -------------------------
class PointPerClass(torch.nn.Module):
    """u(z, r, t | label) = (z - mu[label]) / t for every r: the exact average velocity of single-point data at
    mu[label] (docs §2), as G = u / sigma_d of an Euler-FM flow map with stride and time_scale 1."""

    def __init__(self, mu):
        super().__init__()
        self.mu = mu  # [num_classes + 1, 2], the last row for the null class
        self.w = torch.nn.Parameter(torch.zeros((), dtype=D64))

    def forward(self, x, t, s=None, cond=None):
        z = x * (SIGMA_D * torch.sqrt((1 - t) ** 2 + t**2))[:, None]
        return (z - self.mu[cond]) / t[:, None] / SIGMA_D + 0 * self.w


@pytest.mark.parametrize("omega, kappa", [(1.0, 0.5), (0.2, 0.92), (2.0, 0.0)])
def test_the_guided_model_is_a_fixed_point_of_the_guided_target(omega, kappa):
    """Classes k at single points m_k, null-class velocity that of a point m_0. The model whose conditional velocity
    is omega' v_c + (1 - omega') v_null, omega' = omega / (1 - kappa) (docs §3.5, MF-jax README), is the flow of the
    single point omega' m_k + (1 - omega') m_0; its guided target equals it for every (r, t): loss 0. The same model
    with omega' = omega (kappa's effect ignored) is not a fixed point when kappa > 0."""
    m = torch.tensor([[1.0, 0.5], [-0.8, 0.3]], dtype=D64)
    m0 = torch.tensor([[0.2, -0.6]], dtype=D64)
    n = 256
    labels = torch.arange(n) % 2
    x = m[labels]
    g = torch.Generator().manual_seed(5)
    noise = SIGMA_D * torch.randn(n, 2, generator=g, dtype=D64)
    t = 0.05 + 0.95 * torch.rand(n, generator=g, dtype=D64)
    r = torch.where(torch.arange(n) % 3 == 0, t, t * torch.rand(n, generator=g, dtype=D64))
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    obj = MeanFlow(MeanFlowConfig(omega=omega, kappa=kappa, label_dropout=0.1), ip)

    def loss_for(scale):
        mu = torch.cat([scale * m + (1 - scale) * m0, m0])
        fm = FlowMap(PointPerClass(mu), ip, "euler_fm", "stride", time_scale=1.0, num_classes=2)
        return obj.loss_at(fm, x, noise, r, t, labels)[0].item()

    assert loss_for(omega / (1 - kappa)) < 1e-20
    if kappa > 0:
        assert loss_for(omega) > 1e-2


def test_guided_velocity_formula_interval_dropped_rows_and_passes():
    """v~ = omega v + kappa u(z, t, t | c) + (1 - omega - kappa) u(z, t, t | null) on rows with t in [t_start, t_end]
    whose label was kept, v elsewhere (MF-jax guidance_fn, cond_drop); the guidance passes run without gradient, in
    evaluation mode, with the labels before dropout and the null class; kappa = 0 needs the null pass only and
    omega = 1, kappa = 0 none."""
    net = ProbeNet(2, num_classes=3)
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(net, ip, "euler_fm", "stride", time_scale=1.0, num_classes=3)
    n = 12
    g = torch.Generator().manual_seed(6)
    z, v = torch.randn(n, 2, generator=g, dtype=D64), torch.randn(n, 2, generator=g, dtype=D64)
    t = torch.linspace(0.05, 0.95, n, dtype=D64)
    labels = torch.arange(n) % 3
    dropped = torch.arange(n) % 4 == 1
    omega, kappa, lo, hi = 0.3, 0.6, 0.2, 0.8
    net.train()
    v_tilde = guided_velocity(fm, z, t, v, labels, dropped, omega, kappa, lo, hi)
    assert net.training  # restored
    assert [(c["grad"], tuple(c["cond"].tolist())) for c in net.calls] == [
        (False, (3,) * n), (False, tuple(labels.tolist()))]
    with torch.no_grad():
        u_c = SIGMA_D * fm.G(z, t, t, labels)
        u_null = SIGMA_D * fm.G(z, t, t, torch.full_like(labels, 3))
    inside = (t >= lo) & (t <= hi) & ~dropped
    assert inside.any() and (~inside).any()
    expected = omega * v + kappa * u_c + (1 - omega - kappa) * u_null
    assert torch.allclose(v_tilde[inside], expected[inside], rtol=1e-14)
    assert torch.equal(v_tilde[~inside], v[~inside])

    net.calls.clear()
    v_cfg = guided_velocity(fm, z, t, v, labels, None, 2.0, 0.0)
    assert len(net.calls) == 1 and torch.allclose(v_cfg, 2.0 * v - u_null, rtol=1e-14)
    net.calls.clear()
    assert guided_velocity(fm, z, t, v, labels, dropped, 1.0, 0.0) is v and not net.calls


def test_guidance_without_labels_is_a_clear_error():
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(ProbeNet(2), ip, "euler_fm", "stride", time_scale=1.0)
    x, noise, r, t = batch_of(8)
    with pytest.raises(ConfigError, match="needs labelled data"):
        MeanFlow(MeanFlowConfig(omega=2.0, label_dropout=0.1), ip).loss_at(fm, x, noise, r, t)


# --- the step as the loop calls it ---------------------------------------------------------------------------
def test_loss_draws_times_noise_then_label_dropout_and_trains_dropped_rows_on_the_null_class():
    """``loss`` = ``loss_at`` on replayed draws: (r, t), the noise, then FlowMap.drop_labels' uniforms; the JVP
    pass sees the null class (3) on dropped rows and the kept labels elsewhere."""
    net = ProbeNet(2, num_classes=3)
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(net, ip, "euler_fm", "stride", time_scale=1.0, num_classes=3)
    obj = MeanFlow(MeanFlowConfig(label_dropout=0.5), ip)
    x = SIGMA_D * torch.randn(32, 2, dtype=D64, generator=torch.Generator().manual_seed(7))
    labels = torch.arange(32) % 3
    torch.manual_seed(8)
    loss, logs = obj.loss(fm, Batch(x, labels), 0)
    seen = net.calls[-1]["cond"]
    torch.manual_seed(8)
    r, t = obj.sample_r_t(32, dtype=D64)
    noise = ip.prior((32, 2), dtype=D64)
    dropped = torch.rand(32) < 0.5
    assert dropped.any() and (~dropped).any()
    assert torch.equal(seen, torch.where(dropped, 3, labels))
    again, _ = obj.loss_at(fm, x, noise, r, t, labels, dropped)
    assert torch.equal(loss, again)
    assert set(logs) == {"mf_sq_err", "mf_weight", "mf_r_neq_t"}
    assert logs["mf_r_neq_t"].item() == (r != t).double().mean().item()


@pytest.mark.parametrize("fp32", [True, False])
def test_fp32_runs_the_jvp_and_loss_with_autocast_off(fp32):
    """Under bf16 autocast (the loop's precision: bf16) the loss equals the fp32 one when fp32 is on (py-meanflow
    disables autocast around the JVP and loss), and differs when it is off."""
    from fewstep.networks.mlp import MLP

    torch.manual_seed(0)
    net = MLP((2,), width=32, depth=2, emb_dim=16)
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(net, ip, "euler_fm", "stride", time_scale=1.0)
    x, noise, r, t = (v.float() for v in batch_of(64))
    obj = MeanFlow(MeanFlowConfig(fp32=fp32), ip)
    plain, _ = obj.loss_at(fm, x, noise, r, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = obj.loss_at(fm, x, noise, r, t)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain) == fp32


@pytest.mark.parametrize("parameterisation, second_time, match", [
    ("simple_edm", "stride", "needs euler_fm"), ("euler_fm", "none", "not none")])
def test_a_flow_map_meanflow_cannot_train_is_refused(parameterisation, second_time, match):
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(ProbeNet(2), ip, parameterisation, second_time)
    x, noise, r, t = batch_of(8)
    with pytest.raises(ConfigError, match=match):
        MeanFlow(MeanFlowConfig(), ip).loss_at(fm, x, noise, r, t)


def test_short_training_run_improves_one_step_samples():
    """A few hundred steps of MeanFlow on 8 Gaussians (tiny MLP): 1-step samples z_0 = z_1 - u(z_1, 0, 1) beat
    those of the untrained model in energy distance and SW2. Plain L2 (p = 0, MF Table 1e's first row), as the toy
    recipe: on 2D data the adaptive weight biases the fit (recipes/meanflow_toy.yaml)."""
    from fewstep.data.toy import ToyDataset
    from fewstep.eval.toy_metrics import energy_distance, sliced_wasserstein2
    from fewstep.networks.mlp import MLP
    from fewstep.samplers import Pushforward, generate

    torch.manual_seed(0)
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(MLP((2,), width=64, depth=3, emb_dim=32), ip, "euler_fm", "stride", time_scale=1.0)
    data = ToyDataset("eight_gaussians", SIGMA_D)
    ref = data.sample(2048, torch.Generator().manual_seed(1)).x
    sampler, obj = Pushforward("uniform"), MeanFlow(MeanFlowConfig(p=0.0), ip)

    def one_step():
        with torch.no_grad():
            x, nfe = generate(fm, sampler, 1, 2048, (2,), generator=torch.Generator().manual_seed(2))
        assert nfe == 1
        return energy_distance(x, ref), sliced_wasserstein2(x, ref, generator=torch.Generator().manual_seed(3))

    before = one_step()
    opt = torch.optim.Adam(fm.net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(4)
    for step in range(300):
        loss, _ = obj.loss(fm, data.sample(256, gen), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = one_step()
    # measured: energy 0.035 -> 0.015, SW2 0.169 -> 0.098; with the tangent (v, 1, 0) or the target's sign flipped
    # the samples get worse than the untrained model's (energy 0.24 / 0.15)
    assert after[0] < 0.6 * before[0] and after[1] < 0.8 * before[1], (before, after)
