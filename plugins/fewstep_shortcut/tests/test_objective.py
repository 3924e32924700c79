"""The shortcut objective (fewstep_shortcut/objective.py): its loss against a hand computation with fewstep's
test doubles, Shortcut's own velocity form, the exact Gaussian flow map as a fixed point, clipping and label
dropout as SC-code does them, its time draws, the EMA target and its checkpointed state."""
from __future__ import annotations

import copy

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.errors import RecipeError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.plugins import load_registries
from fewstep.testing import ProbeNet, RecordingFlowMap, tiny_recipe
from fewstep_shortcut import ShortcutConfig
from fewstep_shortcut.objective import Shortcut

F64 = torch.float64
SIGMA_D = 0.5


def probe_G(net: ProbeNet, ip, x_t, s, t):
    """The backbone output for the flow map's inputs, by hand: c_in(t) x_t, 1000 t, stride 1000 (t - s)."""
    c_in = 1.0 / (SIGMA_D * torch.sqrt((1 - t) ** 2 + t**2))
    with torch.no_grad():
        return torch.tanh((c_in[:, None] * x_t) @ net.A.T + t[:, None] * net.b + (t - s)[:, None] * net.c)


def test_loss_matches_a_hand_computation():
    ip = OTFM(SIGMA_D)
    net = ProbeNet(2)
    fm = RecordingFlowMap(net, ip, "euler_fm", "stride")
    obj = Shortcut(ShortcutConfig(bootstrap_fraction=0.25, levels=3, target="online", clip=None), ip)
    x = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    loss, logs = obj.loss(fm, Batch(x), 0)

    torch.manual_seed(7)  # replay the draws made before the first network call: noise, then FM times
    noise = SIGMA_D * torch.randn(16, 2, dtype=F64)
    t_f = ip.T - (ip.T - ip.eps) * torch.rand(12, dtype=F64)
    # flow-matching rows 4..15: velocity sigma_d G(x_t, t, t) against eps - x (OT-FM)
    x_tf = (1 - t_f)[:, None] * x[4:] + t_f[:, None] * noise[4:]
    fm_err = ((SIGMA_D * probe_G(net, ip, x_tf, t_f, t_f) - (noise[4:] - x[4:])) ** 2).mean(1)

    # bootstrap rows 0..3: the recorded f calls are half step 1, half step 2, then the online jump
    half1, half2, online = fm.f_calls
    s, t = online["s"], online["t"]
    m = half1["s"]
    assert torch.allclose(m, 0.5 * (s + t)) and torch.equal(half2["s"], s) and torch.equal(half2["t"], m)
    x_tb = (1 - t)[:, None] * x[:4] + t[:, None] * noise[:4]
    assert torch.allclose(online["x_t"], x_tb) and torch.allclose(half1["x_t"], x_tb)
    f = lambda x_, s_, t_: x_ - SIGMA_D * (t_ - s_)[:, None] * probe_G(net, ip, x_, s_, t_)  # noqa: E731 Euler-FM
    x_m = f(x_tb, m, t)
    assert torch.allclose(half2["x_t"], x_m)
    sc_err = (((f(x_tb, s, t) - f(x_m, s, m)) / (t - s)[:, None]) ** 2).mean(1)

    assert torch.allclose(loss, (fm_err.sum() + sc_err.sum()) / 16, rtol=1e-10)
    assert torch.allclose(logs["fm"], fm_err.mean()) and torch.allclose(logs["self_consistency"], sc_err.mean())
    # gradients only through the online passes: FM velocity (grad), two target half steps (no grad), online jump
    assert [c["grad"] for c in net.calls] == [True, False, False, True]
    loss.backward()
    assert net.A.grad is not None and net.A.grad.abs().sum() > 0


def test_self_consistency_is_shortcuts_velocity_form_under_euler_fm():
    """The SC loss (docs/objectives.md §6.2): ||s(x_t, t, 2d) - sg(s1 + s2)/2||^2 with s1 = s(x_t, t, d),
    x' = x_t + d s1, s2 = s(x', t + d, d), in our time direction and with s = sigma_d G."""
    ip = OTFM(SIGMA_D)
    net = ProbeNet(2, seed=1)
    fm = RecordingFlowMap(net, ip, "euler_fm", "stride")
    obj = Shortcut(ShortcutConfig(bootstrap_fraction=0.5, target="online", clip=None), ip)
    torch.manual_seed(0)
    _, logs = obj.loss(fm, Batch(torch.randn(32, 2, dtype=F64)), 0)
    half1, half2, online = fm.f_calls
    x_t, s, t, m = online["x_t"], online["s"], online["t"], half1["s"]
    d = t - m
    u_full = SIGMA_D * probe_G(net, ip, x_t, s, t)
    u1 = SIGMA_D * probe_G(net, ip, x_t, m, t)
    x_prime = x_t - d[:, None] * u1  # time runs from noise (t = 1) to data: a step of d is t -> t - d
    u2 = SIGMA_D * probe_G(net, ip, x_prime, s, m)
    expected = ((u_full - 0.5 * (u1 + u2)) ** 2).mean()
    assert torch.allclose(logs["self_consistency"], expected, rtol=1e-10)


def test_without_bootstrap_rows_it_is_the_fm_objective():
    """bootstrap_fraction = 0 draws what the built-in fm objective draws and gives its loss."""
    regs = load_registries(env={}, warn=False)
    ip = OTFM(SIGMA_D)
    fm = FlowMap(ProbeNet(2), ip, "euler_fm", "stride")
    batch = Batch(torch.randn(64, 2, dtype=F64))
    fm_entry = regs.objectives.get("fm")
    flow_matching = fm_entry.build(fm_entry.model()(name="fm"), ip)
    torch.manual_seed(5)
    ours, logs = Shortcut(ShortcutConfig(bootstrap_fraction=0.0), ip).loss(fm, batch, 0)
    torch.manual_seed(5)
    theirs, _ = flow_matching.loss(fm, batch, 0)
    assert torch.allclose(ours, theirs, rtol=1e-12) and set(logs) == {"fm"}


@pytest.mark.parametrize("grid", [True, False])
def test_bootstrap_times(grid):
    ip = OTFM(SIGMA_D)
    obj = Shortcut(ShortcutConfig(levels=4, grid=grid), ip)
    torch.manual_seed(0)
    s, m, t = obj.bootstrap_times(4000, "cpu")
    span = ip.T - ip.eps
    j = torch.log2(span / (t - s))
    assert torch.allclose(j, j.round(), atol=1e-9)
    assert set(j.round().long().tolist()) == {0, 1, 2, 3}  # steps span, span/2, span/4, span/8
    assert bool((s >= ip.eps - 1e-12).all() and (t <= ip.T + 1e-12).all() and (s < m).all() and (m < t).all())
    assert torch.allclose(m, 0.5 * (s + t))
    k = (t - ip.eps) / (t - s)
    on_grid = torch.isclose(k, k.round(), atol=1e-9)
    assert bool(on_grid.all()) if grid else on_grid.float().mean() < 0.9  # j = 0 is always on the grid


@pytest.mark.parametrize("batch, frac, expected", [(1024, 0.125, 128), (16, 0.125, 2), (4, 0.01, 1),
                                                   (2, 0.9, 1), (64, 0.0, 0)])
def test_bootstrap_row_count(batch, frac, expected):
    assert Shortcut(ShortcutConfig(bootstrap_fraction=frac), OTFM()).n_bootstrap(batch) == expected


def _step(obj, fm, seed):
    torch.manual_seed(seed)
    loss, _ = obj.loss(fm, Batch(torch.randn(16, 2, dtype=F64)), seed)  # step = seed: one EMA move each
    loss.backward()
    with torch.no_grad():  # a stand-in optimiser step, so the weights move
        for p in fm.net.parameters():
            p -= 0.1 * p.grad
            p.grad = None


def test_ema_target_follows_the_weights():
    ip = OTFM(SIGMA_D)
    fm = FlowMap(ProbeNet(2), ip, "euler_fm", "stride")
    obj = Shortcut(ShortcutConfig(target="ema", target_ema_decay=0.5), ip)
    _step(obj, fm, 0)
    before = copy.deepcopy(obj._ema.net.A.detach())
    now = fm.net.A.detach().clone()
    _step(obj, fm, 1)
    assert torch.allclose(obj._ema.net.A, 0.5 * before + 0.5 * now)  # updated once, before use
    assert not obj._ema.net.A.requires_grad


def test_checkpointed_state_resumes_the_ema_exactly():
    """The EMA target theta- <- d theta- + (1 - d) theta (shortcut models' bootstrap EMA; fewstep's
    EMATarget) restored from the objective's state continues bit for bit: torch.equal, not allclose."""
    ip = OTFM(SIGMA_D)
    cfg = ShortcutConfig(target="ema", target_ema_decay=0.9)
    fm_a = FlowMap(ProbeNet(2), ip, "euler_fm", "stride")
    fm_b = FlowMap(ProbeNet(2), ip, "euler_fm", "stride")
    a, b = Shortcut(cfg, ip), Shortcut(cfg, ip)
    assert a.state_dict() == {}
    for seed in range(3):  # uninterrupted
        _step(a, fm_a, seed)
    for seed in range(2):  # interrupted after two steps ...
        _step(b, fm_b, seed)
    resumed = Shortcut(cfg, ip)
    resumed.load_state_dict(b.state_dict())  # ... and resumed in a fresh process
    _step(resumed, fm_b, 2)
    pairs = list(zip(a._ema.net.parameters(), resumed._ema.net.parameters()))
    assert len(pairs) == 3
    for p, q in pairs:
        assert torch.equal(p, q)


def test_recipe_check_refuses_a_flow_map_without_a_second_time():
    with pytest.raises(RecipeError, match="flowmap.second_time: the shortcut objective conditions the network"):
        tiny_recipe(objective={"name": "shortcut"}, flowmap={"parameterisation": "euler_fm", "second_time": "none"})
    assert tiny_recipe(objective={"name": "shortcut"}).sampler.name == "pushforward"  # its default_sampler


def test_config_fields():
    for bad in ({"bootstrap_fraction": 1.0}, {"levels": 0}, {"target": "teacher"}, {"d": 0.5}):
        with pytest.raises(ValueError):
            ShortcutConfig(**bad)


class ExactGaussianG(torch.nn.Module):
    """The exact flow map of data N(m, v) under OT-FM with prior N(0, sigma_d^2), as an Euler-FM backbone:
    f*(x_t, s, t) = (1 - s) m + rho(s, t) (x_t - (1 - t) m), rho = sqrt(V_s / V_t), V_t = (1-t)^2 v + t^2 sigma_d^2
    (docs/objectives.md §2), so G* = (x_t - f*) / (sigma_d (t - s)), and the velocity at s = t for G(x, t, t)."""

    def __init__(self, m: float, v: float):
        super().__init__()
        self.m, self.v = m, v
        self.scale = torch.nn.Parameter(torch.ones((), dtype=F64))  # something for the optimiser to hold

    def V(self, t):
        return (1 - t) ** 2 * self.v + t**2 * SIGMA_D**2

    def forward(self, u, c_noise, stride, cond=None):
        t = c_noise / 1000.0
        s = t - stride / 1000.0
        x_t = u / (1.0 / (SIGMA_D * torch.sqrt((1 - t) ** 2 + t**2)))[:, None]
        dev = x_t - ((1 - t) * self.m)[:, None]
        gap = (t - s)[:, None]
        rho = torch.sqrt(self.V(s) / self.V(t))[:, None]
        f = ((1 - s) * self.m)[:, None] + rho * dev
        # at s = t: G* = -v*(x_t, t) ... the velocity -m + k_t (x - mu_t), k_t = V_t' / (2 V_t), over sigma_d
        k = ((t * SIGMA_D**2 - (1 - t) * self.v) / self.V(t))[:, None]
        at_t = (-self.m + k * dev) / SIGMA_D
        safe = torch.where(gap > 0, gap, torch.ones_like(gap))
        return self.scale * torch.where(gap > 0, (x_t - f) / (SIGMA_D * safe), at_t)


@pytest.mark.parametrize("m, v", [(0.3, 0.2), (-0.5, 0.0)])
def test_the_exact_flow_map_has_zero_self_consistency_loss(m, v):
    """The semigroup f*(., s, t) = f*(f*(., m, t), s, m) makes two exact half steps one exact step, for every
    row and level (docs/objectives.md §6.6), clipping off; single-point data (v = 0) also zeroes the FM rows."""
    ip = OTFM(SIGMA_D, eps=0.0, T=1.0)
    fm = FlowMap(ExactGaussianG(m, v), ip, "euler_fm", "stride")
    obj = Shortcut(ShortcutConfig(bootstrap_fraction=0.5, levels=5, target="online", clip=None), ip)
    x = m + (v**0.5) * torch.randn(256, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    _, logs = obj.loss(fm, Batch(x), 0)
    assert logs["self_consistency"].item() < 1e-20
    if v == 0:
        assert logs["fm"].item() < 1e-20
    else:  # the flow rows keep the conditional velocity's noise: v sigma_d^2 / V_t per dimension on average
        assert logs["fm"].item() > 1e-3


def test_clipping_bounds_the_half_step_point_and_the_target_velocity():
    """SC-code: x' = clip(x_t + d s1, -4, 4), target = clip((s1 + s2)/2, -4, 4) on unit-scale data; here
    +-clip sigma_d. A network whose jumps overshoot is clipped: the target velocity never exceeds it."""

    class Wild(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(100.0, dtype=F64))

        def forward(self, u, c_noise, stride, cond=None):
            return self.w * torch.ones_like(u)

    ip = OTFM(SIGMA_D)
    fm = RecordingFlowMap(Wild(), ip, "euler_fm", "stride")
    obj = Shortcut(ShortcutConfig(bootstrap_fraction=0.5, target="online", clip=4.0), ip)
    torch.manual_seed(0)
    obj.loss(fm, Batch(torch.zeros(8, 2, dtype=F64)), 0)
    half1, half2, online = fm.f_calls
    assert half2["x_t"].abs().max().item() == pytest.approx(4 * SIGMA_D)  # x' clipped (unclipped: ~50)
    # the online velocity is sigma_d * 100 = 50 everywhere; the clipped target velocity is 2: error (50 - 2)^2
    torch.manual_seed(0)
    _, logs = obj.loss(fm, Batch(torch.zeros(8, 2, dtype=F64)), 0)
    assert logs["self_consistency"].item() == pytest.approx((50 - 4 * SIGMA_D) ** 2)


def test_labels_are_dropped_on_flow_rows_only():
    ip = OTFM(SIGMA_D)
    fm = RecordingFlowMap(ProbeNet(2), ip, "euler_fm", "stride", num_classes=3)
    obj = Shortcut(ShortcutConfig(bootstrap_fraction=0.5, target="online", label_dropout=0.999), ip)
    torch.manual_seed(0)
    obj.loss(fm, Batch(torch.randn(64, 2, dtype=F64), torch.zeros(64, dtype=torch.long)), 0)
    flow, *boot = fm.net.calls
    assert (flow["cond"] == 3).double().mean() > 0.9  # the null class
    assert all(bool((c["cond"] == 0).all()) for c in boot)
