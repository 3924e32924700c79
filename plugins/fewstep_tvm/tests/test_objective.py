"""The TVM loss (docs/objectives.md §5.2) against the Gaussian oracle of §2 / §5.9, finite differences and
values written out by hand."""
from __future__ import annotations

import copy

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.testing import ProbeNet
from fewstep_tvm import TVMConfig
from fewstep_tvm.objective import TVM

D64 = torch.float64
SIGMA_D = 0.5


# --- the exact flow map of Gaussian data (docs/objectives.md §2), as a backbone -------------------------
class ExactG(torch.nn.Module):
    """G*(x_t, s, t) = u*(x_t, s, t) / sigma_d for data N(m, diag v) and prior N(0, c^2 I), c = sigma_d, under
    OT-FM, Euler-FM, ``second_time: stride`` and a given time_scale (docs/objectives.md §2):
    u* = A(s, t) (x_t - (1 - t) m) - m with A = (1 - rho)/(t - s), rho = sqrt(V_s / V_t),
    V_t = (1 - t)^2 v + t^2 c^2. A is written without the removable 0/0 at s = t: 1 - rho^2 =
    (V_t - V_s)/V_t and V_t - V_s = (t - s)(v (t + s - 2) + c^2 (t + s)), so
    A = (v (t + s - 2) + c^2 (t + s)) / (V_t (1 + rho)), which at s = t is k_t = (t c^2 - (1 - t) v)/V_t.

    It reads the network's inputs back: t = c_noise / time_scale, s = t - e2 / time_scale and
    x_t = u_in sigma_d sqrt((1 - t)^2 + t^2) (c_in of IMM §4.2)."""

    def __init__(self, m: torch.Tensor, v: torch.Tensor, time_scale: float = 1.0):
        super().__init__()
        self.m, self.v, self.ts = m, v, time_scale

    def forward(self, x, t, s=None, cond=None):
        c2 = SIGMA_D**2
        t_ = (t / self.ts)[:, None]
        s_ = t_ - (s / self.ts)[:, None]
        x_t = x * SIGMA_D * torch.sqrt((1 - t_) ** 2 + t_**2)
        V = lambda u: (1 - u) ** 2 * self.v + u**2 * c2  # noqa: E731
        A = (self.v * (t_ + s_ - 2) + c2 * (t_ + s_)) / (V(t_) * (1 + torch.sqrt(V(s_) / V(t_))))
        return (A * (x_t - (1 - t_) * self.m) - self.m) / SIGMA_D


def gaussian(n: int, m, v, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m, v = torch.tensor(m, dtype=D64), torch.tensor(v, dtype=D64)
    x = m + v.sqrt() * torch.randn(n, m.shape[0], generator=g, dtype=D64)
    noise = SIGMA_D * torch.randn(n, m.shape[0], generator=g, dtype=D64)
    return m, v, x, noise


def inputs(obj: TVM, x, noise, seed: int = 0):
    """(x_t, s, t, x_s', s', u) built by hand: OT-FM x_t = (1 - t) x + t eps, the same x and eps at s', u = eps - x."""
    torch.manual_seed(seed)
    s, t, s_prime, _ = obj.times(x.shape[0])
    x_t = (1 - t)[:, None] * x + t[:, None] * noise
    x_sp = (1 - s_prime)[:, None] * x + s_prime[:, None] * noise
    return x_t, s, t, x_sp, s_prime, noise - x


def exact(m, v, **cfg):
    ip = OTFM(SIGMA_D, 0.0, 1.0)
    return FlowMap(ExactG(m, v), ip, "euler_fm", "stride", 1.0), TVM(TVMConfig(**cfg), ip)


# --- the oracle (docs/objectives.md §5.9) ----------------------------------------------------------------
def test_terminal_term_is_zero_for_every_sample_at_the_exact_map():
    """With the exact map online and as target: df*/ds(x_t, s, t) = -m + V_s'/(2 sqrt(V_s V_t)) (x_t - mu_t)
    (the JVP checked against this closed form), v_tgt = v*(f*, s) = -m + k_s (f* - mu_s) (closed form), and
    the two are equal, so every terminal row is 0 (no Monte Carlo)."""
    m, v, x, noise = gaussian(512, [0.7, -1.2], [0.3, 0.05])
    fm, obj = exact(m, v)
    x_t, s, t, x_sp, s_prime, u = inputs(obj, x, noise)
    out = obj.terms(fm, obj.target_flowmap(fm, 0), x_t, s, t, x_sp, s_prime, u)
    c2 = SIGMA_D**2
    s_, t_ = s[:, None], t[:, None]
    V = lambda r: (1 - r) ** 2 * v + r**2 * c2  # noqa: E731
    f_star = (1 - s_) * m + torch.sqrt(V(s_) / V(t_)) * (x_t - (1 - t_) * m)
    dV_s = -2 * (1 - s_) * v + 2 * s_ * c2
    dfds_star = -m + dV_s / (2 * torch.sqrt(V(s_) * V(t_))) * (x_t - (1 - t_) * m)
    v_star = -m + (s_ * c2 - (1 - s_) * v) / V(s_) * (f_star - (1 - s_) * m)
    assert torch.allclose(out.f, f_star, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.dfds, dfds_star, rtol=1e-10, atol=1e-12)
    assert torch.allclose(out.v_target, v_star, rtol=1e-10, atol=1e-12)
    assert out.terminal.max() < 1e-24 and out.dfds.pow(2).mean() > 0.1
    # a map that is slightly off is seen: the online mean shifted by 0.05
    wrong = FlowMap(ExactG(m + 0.05, v), fm.interpolant, "euler_fm", "stride", 1.0)
    off = obj.terms(wrong, obj.target_flowmap(fm, 0), x_t, s, t, x_sp, s_prime, u)
    assert off.terminal.min() > 1e-5


def test_fm_term_floor_is_the_conditional_variance():
    """At the exact map the FM residual is v*(x_s', s') - (eps - x), whose mean square given s' is
    v c^2 / V_s' per dimension (docs/objectives.md §2, §5.9): the per-row FM terms average to that floor."""
    m, v, x, noise = gaussian(20_000, [0.5, -0.3], [0.2, 0.6], seed=1)
    fm, obj = exact(m, v)
    x_t, s, t, x_sp, s_prime, u = inputs(obj, x, noise, seed=1)
    out = obj.terms(fm, obj.target_flowmap(fm, 0), x_t, s, t, x_sp, s_prime, u)
    sp = s_prime[:, None]
    floor = (v * SIGMA_D**2 / ((1 - sp) ** 2 * v + sp**2 * SIGMA_D**2)).mean(1)
    diff = out.fm - floor
    assert abs(diff.mean()) < 4 * diff.std() / len(diff) ** 0.5
    assert abs(out.fm.mean() / floor.mean() - 1) < 0.03 and floor.mean() > 0.05


def test_single_point_data_gives_zero_loss():
    """v = 0: f* = DDIM(x_t, m, s, t), u* = (x_t - m)/t, eps - x = v*(x_t, t) exactly: both terms are 0, through
    loss() itself (its own times and noise)."""
    m = torch.tensor([0.8, -0.4], dtype=D64)
    fm, obj = exact(m, torch.zeros(2, dtype=D64))
    torch.manual_seed(2)
    loss, logs = obj.loss(fm, Batch(m.expand(256, 2).clone()), 0)
    assert loss.item() < 1e-26 and logs["terminal_loss"] < 1e-26 and logs["fm_loss"] < 1e-26
    off, _ = obj.loss(fm, Batch((m + 0.1).expand(256, 2).clone()), 0)  # data elsewhere than the map's point
    assert off.item() > 1e-3


# --- gradients, passes, wiring -----------------------------------------------------------------------------
def probe_setup(seed: int = 0, n: int = 64, **cfg):
    ip = OTFM(SIGMA_D, 0.0, 1.0)
    fm = FlowMap(ProbeNet(2, seed=seed), ip, "euler_fm", "stride", 1000.0)
    target = FlowMap(ProbeNet(2, seed=seed + 1), ip, "euler_fm", "stride", 1000.0)  # any fixed target net
    obj = TVM(TVMConfig(**cfg), ip)
    _, _, x, noise = gaussian(n, [0.3, -0.2], [0.4, 0.3], seed=seed)
    return fm, target, obj, inputs(obj, x, noise, seed)


def dfds_by_differences(fm: FlowMap, x_t, s, t, h: float = 1e-4):
    """d f(x_t, s, t)/ds by the 4th-order central difference: no forward-mode AD."""
    f = lambda e: fm.f(x_t, s + e, t)  # noqa: E731
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def test_gradient_flows_through_the_tangent():
    """Reverse-over-forward ([TVM] get_dfds with detach_jvp: false): the gradient of the loss along a random
    parameter direction equals the central difference of the same loss written with df/ds by differences and
    the targets frozen (they are stop-gradient). A gradient that stops at the tangent dG/ds is seen."""
    fm, target, obj, (x_t, s, t, x_sp, s_prime, u) = probe_setup()
    out = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u)
    out.loss.backward()
    params = list(fm.net.parameters())
    g = torch.Generator().manual_seed(9)
    delta = [torch.randn(p.shape, generator=g, dtype=D64) for p in params]
    analytic = sum((p.grad * d).sum() for p, d in zip(params, delta))
    v_tgt = out.v_target.detach()

    def frozen_loss() -> torch.Tensor:
        with torch.no_grad():
            terminal = (dfds_by_differences(fm, x_t, s, t) - v_tgt).pow(2).mean(1)
            return (terminal + (SIGMA_D * fm.G(x_sp, s_prime, s_prime) - u).pow(2).mean(1)).mean()

    def shifted(e: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, delta):
                p.add_(e * d)
        value = frozen_loss()
        with torch.no_grad():
            for p, d in zip(params, delta):
                p.sub_(e * d)
        return value

    e = 1e-5
    numeric = (shifted(e) - shifted(-e)) / (2 * e)
    assert torch.allclose(analytic, numeric, rtol=1e-6), (analytic.item(), numeric.item())

    # the same loss with the tangent detached (detach_jvp: true) has another gradient
    fm.net.zero_grad()
    jvp = fm.jvp(x_t, s, t, (0, 1, 0))
    dfds_detached = SIGMA_D * jvp.G - SIGMA_D * (t - s)[:, None] * jvp.dG.detach()
    detached = ((dfds_detached - v_tgt).pow(2).mean(1) + (fm.velocity(x_sp, s_prime) - u).pow(2).mean(1)).mean()
    detached.backward()
    other = sum((p.grad * d).sum() for p, d in zip(params, delta))
    assert abs(other - numeric) > 1e-3 * abs(numeric)


def test_one_fused_pass_equals_two_passes():
    """The 2B-row forward-mode pass (terminal rows with ds = 1, FM rows at s = t = s') gives the loss and the
    gradients of a JVP pass plus a separate FM forward (the official code's passes), with ONE backbone call
    with gradients instead of two."""
    results = []
    for fused in (True, False):
        fm, target, obj, args = probe_setup(fused_pass=fused)
        out = obj.terms(fm, target, *args)
        out.loss.backward()
        calls = [c["grad"] for c in fm.net.calls]
        results.append((out, [p.grad.clone() for p in fm.net.parameters()], calls))
    (a, ga, ca), (b, gb, cb) = results
    assert ca == [True] and cb == [True, True]
    assert torch.allclose(a.loss, b.loss, rtol=1e-13, atol=0)
    for name in ("terminal", "fm", "f", "dfds", "v_target", "v_fm"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-14), name
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-11, atol=1e-14)
    # the FM rows' df/ds is the flow map's velocity sigma_d G(x_s', s', s')
    fm, _, _, (_, _, _, x_sp, s_prime, _) = probe_setup()
    assert torch.allclose(a.v_fm, SIGMA_D * fm.G(x_sp, s_prime, s_prime), rtol=1e-12)


def test_loss_by_hand_with_a_probe_network():
    """The loss written out: mean_rows[mean_D (df/ds - v_tgt)^2 + mean_D (sigma_d G(x_s', s', s') - (eps - x))^2],
    df/ds by differences, v_tgt = sigma_d G_target(sg f, s, s) with f = x_t - sigma_d (t - s) G(x_t, s, t)."""
    fm, target, obj, (x_t, s, t, x_sp, s_prime, u) = probe_setup(seed=3)
    out = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u)
    with torch.no_grad():
        f = x_t - SIGMA_D * (t - s)[:, None] * fm.G(x_t, s, t)
        v_tgt = SIGMA_D * target.G(f, s, s)
        terminal = (dfds_by_differences(fm, x_t, s, t) - v_tgt).pow(2).mean(1)
        fm_rows = (SIGMA_D * fm.G(x_sp, s_prime, s_prime) - u).pow(2).mean(1)
    assert torch.allclose(out.terminal, terminal, rtol=1e-8)
    assert torch.allclose(out.fm, fm_rows, rtol=1e-12)
    assert torch.allclose(out.loss, (terminal + fm_rows).mean(), rtol=1e-8)


def test_loss_builds_its_inputs_from_one_draw_of_x_and_eps():
    """loss() replayed: times (s, t, s'), then eps ~ N(0, sigma_d^2 I); x_t and x_s' share x and eps, and the FM
    target is eps - x. Equal to terms() on inputs written by hand from the same draws."""
    fm, target, obj, _ = probe_setup(seed=4)
    _, _, x, _ = gaussian(32, [0.1, 0.2], [0.5, 0.5], seed=4)
    torch.manual_seed(5)
    loss, logs = obj.loss(fm, Batch(x), 0)
    torch.manual_seed(5)
    s, t, s_prime, _ = obj.times(32)
    noise = SIGMA_D * torch.randn(32, 2, dtype=D64)
    x_t = (1 - t)[:, None] * x + t[:, None] * noise
    x_sp = (1 - s_prime)[:, None] * x + s_prime[:, None] * noise
    out = obj.terms(fm, obj.target_flowmap(fm, 0), x_t, s, t, x_sp, s_prime, noise - x)
    assert torch.allclose(loss, out.loss, rtol=1e-13)
    assert torch.allclose(torch.as_tensor(logs["terminal_loss"]), out.terminal.mean(), rtol=1e-12)
    assert logs["nan_rows"] == 0


def test_terminal_term_is_off_where_s_equals_t():
    """1[s !~ t] of the official code (torch.isclose): a row with t = s has no terminal term."""
    fm, target, obj, (x_t, s, t, x_sp, s_prime, u) = probe_setup()
    t = t.clone()
    t[:5] = s[:5]
    out = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u)
    assert bool((out.terminal[:5] == 0).all()) and bool((out.terminal[5:] > 0).all())


class NaNRows(torch.nn.Module):
    """A backbone whose output is NaN on rows 3 and 7 (a diverged target network)."""

    def __init__(self):
        super().__init__()
        self.inner = ProbeNet(2, seed=1)

    def forward(self, x, t, s=None, cond=None):
        out = self.inner(x, t, s, cond).clone()
        out[[3, 7]] = float("nan")
        return out


@pytest.mark.parametrize("zero", [True, False])
def test_nan_rows_are_counted(zero):
    """Pitfall 5: a row that is NaN is zeroed (as the official code) and counted in the logs, or kept. (A NaN
    in the online pass's tangent stops training in FlowMap.jvp before the loss; here the target is NaN.)"""
    fm, _, obj, (x_t, s, t, x_sp, s_prime, u) = probe_setup(zero_nan_rows=zero)
    target = FlowMap(NaNRows(), fm.interpolant, "euler_fm", "stride", 1000.0)
    out = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u)
    assert out.nan_rows.item() == 2
    assert bool(torch.isfinite(out.loss)) == zero
    if zero:  # the loss and its gradient are those of the other rows (sum / B), finite
        out.loss.backward()
        grads = [p.grad.clone() for p in fm.net.parameters()]
        clean = torch.ones(64, dtype=torch.bool)
        clean[[3, 7]] = False
        assert bool((out.terminal[~clean] == 0).all() and (out.fm[~clean] == 0).all())
        fm.net.zero_grad()
        again = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u)
        expected = (again.terminal + again.fm)[clean].sum() / 64
        assert torch.allclose(out.loss, expected, rtol=1e-13)
        expected.backward()
        for g, p in zip(grads, fm.net.parameters()):
            assert bool(torch.isfinite(g).all()) and torch.allclose(g, p.grad, rtol=1e-12)


def test_guided_target_by_hand():
    """guidance w ([TVM] wrapper.py forward at a fixed w, no beta input): labelled rows regress
    u_w = w (eps - x) + (1 - w) v_EMA(x_s', s', null), both terms weighted by beta^2 = 1/w^2; null-label rows
    keep w = 1. The terminal target is the EMA velocity at (sg f, s) with the row's own label."""
    ip = OTFM(SIGMA_D, 0.0, 1.0)
    fm = FlowMap(ProbeNet(2, num_classes=3, seed=6), ip, "euler_fm", "stride", 1000.0, num_classes=3)
    target = FlowMap(ProbeNet(2, num_classes=3, seed=7), ip, "euler_fm", "stride", 1000.0, num_classes=3)
    obj = TVM(TVMConfig(guidance=2.0), ip)
    _, _, x, noise = gaussian(48, [0.1, 0.2], [0.5, 0.5], seed=6)
    x_t, s, t, x_sp, s_prime, u = inputs(obj, x, noise, seed=6)
    cond = torch.arange(48) % 4  # label 3 is the null class
    out = obj.terms(fm, target, x_t, s, t, x_sp, s_prime, u, cond)
    w = torch.where(cond == 3, 1.0, 2.0).to(D64)[:, None]
    with torch.no_grad():
        f = x_t - SIGMA_D * (t - s)[:, None] * fm.G(x_t, s, t, cond)
        v_tgt = SIGMA_D * target.G(f, s, s, cond)
        v_uncond = SIGMA_D * target.G(x_sp, s_prime, s_prime, torch.full_like(cond, 3))
        u_w = w * u + (1 - w) * v_uncond
        dfds = dfds_by_differences(lambda_fm(fm, cond), x_t, s, t)
        terminal = ((dfds - v_tgt) / w).pow(2).mean(1)
        fm_rows = ((SIGMA_D * fm.G(x_sp, s_prime, s_prime, cond) - u_w) / w).pow(2).mean(1)
    assert torch.allclose(out.u_target, u_w, rtol=1e-12)
    assert torch.allclose(out.terminal, terminal, rtol=1e-8)
    assert torch.allclose(out.fm, fm_rows, rtol=1e-12)
    assert not torch.allclose(out.fm, (SIGMA_D * fm.G(x_sp, s_prime, s_prime, cond) - u).detach().pow(2).mean(1))


def lambda_fm(fm: FlowMap, cond):
    """fm with its labels bound, for dfds_by_differences."""
    bound = copy.copy(fm)
    bound.f = lambda x, s, t: FlowMap.f(fm, x, s, t, cond)
    return bound


def test_guidance_needs_labels():
    fm, target, obj, args = probe_setup(guidance=2.0)
    with pytest.raises(ConfigError, match="objective.guidance: 2.0 needs labelled data"):
        obj.terms(fm, target, *args)


def test_ema_target_moves_once_per_step_and_runs_in_eval_mode():
    """theta-bar <- 0.99 theta-bar + 0.01 theta at the first call of each step ([TVM] ema_target_beta 0.99):
    a second shard of the same step sees the same target."""
    fm, _, obj, _ = probe_setup()
    first = obj.target_flowmap(fm, 0)
    assert not first.net.training and torch.equal(first.net.A, fm.net.A)
    a0 = first.net.A.clone()
    with torch.no_grad():
        fm.net.A.add_(1.0)
    assert torch.equal(obj.target_flowmap(fm, 0).net.A, a0)  # same step: unchanged
    moved = obj.target_flowmap(fm, 1).net.A
    assert torch.allclose(moved, 0.99 * a0 + 0.01 * fm.net.A, rtol=1e-14)
    assert set(obj.state_dict()["target"]) == {"A", "b", "c"}


class Augmented(ProbeNet):
    """ProbeNet that takes EDM's augmentation labels and keeps what it saw."""

    def __init__(self):
        super().__init__(2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x, t, s=None, cond=None, augment_labels=None):
        self.seen.append(augment_labels)
        return super().forward(x, t, s, cond)


@pytest.mark.parametrize("fused", [False, True])
def test_augmentation_labels_follow_the_fm_rows(fused):
    """The FM rows are the same (augmented) images as the terminal rows: each of the two passes (or the fused
    2B-row pass, twice over) hands the backbone the batch's labels, the target pass once; the flow map keeps
    its own afterwards."""
    ip = OTFM(SIGMA_D, 0.0, 1.0)
    fm = FlowMap(Augmented(), ip, "euler_fm", "stride", 1000.0)
    obj = TVM(TVMConfig(fused_pass=fused), ip)
    _, _, x, noise = gaussian(16, [0.1, 0.2], [0.5, 0.5])
    labels = torch.randn(16, 9, dtype=D64)
    with fm.augmented(labels):
        obj.terms(fm, obj.target_flowmap(fm, 0), *inputs(obj, x, noise))
        assert fm.augment_labels is labels
    online, target = fm.net.seen, obj.target_flowmap(fm, 0).net.seen
    expect = [torch.cat([labels, labels])] if fused else [labels, labels]
    assert len(online) == len(expect) and all(torch.equal(o, e) for o, e in zip(online, expect))
    assert len(target) == 1 and torch.equal(target[0], labels)
