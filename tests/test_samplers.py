"""Schedules and samplers over a flow map (research/imm.md §5)."""
import pytest
import torch
from torch import nn

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM, VPCosine
from fewstep.samplers import (
    Euler,
    Heun,
    Pushforward,
    Restart,
    edm_schedule,
    eta_schedule,
    generate,
    make_schedule,
    uniform_schedule,
)

D64 = torch.float64
SIGMA_D = 0.5
SAMPLERS = [Pushforward, Restart, Euler, Heun]
SIDS = ["pushforward", "restart", "euler", "heun"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- schedules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_uniform_schedule(n):
    ip = OTFM()
    ts = uniform_schedule(ip, n)
    assert ts.dtype == D64 and ts.shape == (n + 1,)
    torch.testing.assert_close(ts, torch.linspace(0.994, 0.006, n + 1, dtype=D64), rtol=0, atol=1e-15)
    torch.testing.assert_close(make_schedule(ip, n), ts, rtol=0, atol=0)


def test_eta_schedule_two_steps_imm_cifar():
    """IMM App. I.2: 0.994 -> eta^-1(1.4) = 1.4/2.4 -> 0.006 under OT-FM."""
    ip = OTFM()
    ts = make_schedule(ip, 2, "eta", mid_etas=[1.4])
    assert ts.dtype == D64
    torch.testing.assert_close(ts, torch.tensor([0.994, 1.4 / 2.4, 0.006], dtype=D64), rtol=0, atol=1e-15)
    assert ip.eta(ts[1]).item() == pytest.approx(1.4, rel=1e-12)


def test_eta_schedule_sorts_and_checks_mid_etas():
    ip = OTFM()
    ts = eta_schedule(ip, 3, [0.5, 3.0])
    torch.testing.assert_close(ts, torch.tensor([0.994, 0.75, 1 / 3, 0.006], dtype=D64), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="mid_etas"):
        eta_schedule(ip, 2, [500.0])  # eta^-1(500) > T


@pytest.mark.parametrize("n", [1, 4])
def test_eta_schedule_falls_back_to_uniform(n):
    ip = OTFM()
    torch.testing.assert_close(make_schedule(ip, n, "eta", mid_etas=[1.4]), uniform_schedule(ip, n),
                               rtol=0, atol=0)


@pytest.mark.parametrize("cls,eps", [(OTFM, 0.006), (OTFM, 0.0), (VPCosine, 0.0), (VPCosine, 0.004)])
@pytest.mark.parametrize("n", [1, 2, 8])
def test_edm_schedule_endpoints_and_monotone(cls, eps, n):
    ip = cls(eps=eps, T=0.994)
    ts = make_schedule(ip, n, "edm", rho=7.0)
    assert ts.dtype == D64 and ts.shape == (n + 1,)
    assert ts[0].item() == 0.994 and ts[-1].item() == eps
    assert bool((ts[:-1] > ts[1:]).all())


def test_edm_schedule_rho_one_is_uniform_in_eta():
    ip = OTFM()
    ts = edm_schedule(ip, 5, rho=1.0)
    eta = ip.eta(ts)
    e_max, e_min = 0.994 / 0.006, 0.006 / 0.994
    torch.testing.assert_close(eta, torch.linspace(e_max, e_min, 6, dtype=D64), rtol=1e-10, atol=1e-12)


def test_edm_schedule_rho_seven_values():
    """Karras et al. Eq. 5 in eta, mapped back with eta^-1."""
    ip = OTFM()
    n, rho = 4, 7.0
    e_max, e_min = 0.994 / 0.006, 0.006 / 0.994
    i = torch.arange(n + 1, dtype=D64) / n
    eta = (e_max ** (1 / rho) + i * (e_min ** (1 / rho) - e_max ** (1 / rho))) ** rho
    torch.testing.assert_close(make_schedule(ip, n, "edm"), eta / (1 + eta), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "eta", "edm"])
@pytest.mark.parametrize("n", [0, -1])
def test_schedule_needs_a_step(kind, n):
    with pytest.raises(ValueError):
        make_schedule(OTFM(), n, kind)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(OTFM(), 2, "cosine")


# --- flow maps used by the sampler tests ----------------------------------------------------------
class Zero(nn.Module):
    """G = 0: under euler_fm f(x_t, s, t) = x_t and the velocity is 0."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, s, cond):
        self.calls += 1
        return torch.zeros_like(x)


class Tiny(nn.Module):
    """A fixed nonlinear backbone, with a call counter."""

    def __init__(self, d=2):
        super().__init__()
        self.register_buffer("w", torch.linspace(0.5, 1.5, d, dtype=D64))
        self.calls = 0

    def forward(self, x, t, s, cond):
        self.calls += 1
        return torch.tanh(x * self.w.to(x.dtype) + t[:, None] * 1e-3 + s[:, None] * 2e-3)


class DeltaOTFM(nn.Module):
    """The exact euler_fm backbone for data = a single point x* under OT-FM:
    G = (eps - x*)/sigma_d = (x_t - x*)/(t sigma_d), computed from (c_in x_t, 1000 t)."""

    def __init__(self, x_star, ip):
        super().__init__()
        self.x_star, self.ip = x_star, ip

    def forward(self, u, tau, s, cond):
        t = (tau / 1000.0)[:, None]
        ip = self.ip
        c_in = 1.0 / (ip.sigma_d * torch.sqrt(ip.alpha(t) ** 2 + ip.sigma(t) ** 2))
        x_t = u / c_in
        return (x_t - self.x_star) / (t * ip.sigma_d)


def _x(b=6, d=2, seed=0):
    return OTFM(sigma_d=SIGMA_D).prior((b, d), _gen(seed), dtype=D64)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SIDS)
@pytest.mark.parametrize("n", [1, 3])
def test_zero_network_leaves_x_unchanged(sampler, n):
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Zero(), ip, "euler_fm", "s")
    x = _x()
    ts = make_schedule(ip, n)
    out = sampler()(fm, x, ts, generator=_gen(1))
    if sampler is Restart and n > 1:
        # x0 = f(x, eps, t) = x, then re-noised to the next time with fresh prior noise
        g = _gen(1)
        expected = x
        for t_next in ts[1:-1].tolist():
            expected = ip.interpolate(expected, ip.prior(tuple(x.shape), g, dtype=D64), torch.tensor(t_next, dtype=D64))
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(out, x)
    else:
        torch.testing.assert_close(out, x, rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_restart_matches_manual_loop(n):
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Tiny(), ip, "euler_fm", "s")
    x = _x(seed=2)
    ts = make_schedule(ip, n)
    out = Restart()(fm, x, ts, generator=_gen(3))
    g, eps, cur = _gen(3), ts[-1].item(), x
    times = ts.tolist()
    for i, t in enumerate(times[:-1]):
        x0 = fm.f(cur, eps, t)
        if i < n - 1:
            cur = ip.interpolate(x0, ip.prior(tuple(x.shape), g, dtype=D64), torch.tensor(times[i + 1], dtype=D64))
    torch.testing.assert_close(out, x0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_pushforward_matches_manual_loop(n):
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Tiny(), ip, "simple_edm", "s")
    x = _x(seed=4)
    ts = make_schedule(ip, n)
    out = Pushforward()(fm, x, ts)
    cur = x
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
        cur = fm.f(cur, s, t)
    torch.testing.assert_close(out, cur, rtol=0, atol=0)
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("sampler,per_step", [(Pushforward, 1), (Euler, 1), (Restart, 1), (Heun, 2)],
                         ids=SIDS)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_nfe(sampler, per_step, n):
    ip = OTFM(sigma_d=SIGMA_D)  # eps = 0.006 > 0, so every Heun step takes its corrector
    net = Tiny()
    fm = FlowMap(net, ip, "euler_fm", "s")
    sampler()(fm, _x(), make_schedule(ip, n), generator=_gen(0))
    assert net.calls == per_step * n
    assert fm.nfe == per_step * n


def test_heun_last_step_to_zero_takes_one_evaluation():
    ip = OTFM(sigma_d=SIGMA_D, eps=0.0)
    net = Tiny()
    fm = FlowMap(net, ip, "euler_fm", "s")
    Heun()(fm, _x(), make_schedule(ip, 3))
    assert net.calls == 2 * 3 - 1


# --- exactness on a delta distribution ---------------------------------------------------------------
X_STAR = torch.tensor([[0.8, -0.3]], dtype=D64)


def _delta_fm(eps):
    ip = OTFM(sigma_d=SIGMA_D, eps=eps)
    return FlowMap(DeltaOTFM(X_STAR, ip), ip, "euler_fm", "s"), ip


@pytest.mark.parametrize("n", [1, 2, 5])
def test_pushforward_exact_on_delta(n):
    fm, ip = _delta_fm(0.0)
    out = Pushforward()(fm, _x(seed=5), make_schedule(ip, n))
    torch.testing.assert_close(out, X_STAR.expand(6, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [1, 3])
def test_pushforward_exact_on_delta_with_eps(n):
    """With eps > 0 the sample is the DDIM target interpolate(x*, noise, eps), noise implied by x_T."""
    fm, ip = _delta_fm(0.006)
    x = _x(seed=6)
    noise = (x - ip.alpha(torch.tensor(ip.T, dtype=D64)) * X_STAR) / ip.T
    out = Pushforward()(fm, x, make_schedule(ip, n))
    torch.testing.assert_close(out, ip.interpolate(X_STAR, noise, torch.tensor(0.006, dtype=D64)),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [1, 3])
def test_restart_exact_on_delta(n):
    fm, ip = _delta_fm(0.0)
    out = Restart()(fm, _x(seed=7), make_schedule(ip, n), generator=_gen(8))
    torch.testing.assert_close(out, X_STAR.expand(6, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sampler", [Euler, Heun], ids=["euler", "heun"])
@pytest.mark.parametrize("n", [1, 3])
def test_ode_samplers_exact_on_delta(sampler, n):
    """The exact velocity of a delta is constant along the straight OT path, so Euler is exact."""
    fm, ip = _delta_fm(0.0)
    out = sampler()(fm, _x(seed=9), make_schedule(ip, n))
    torch.testing.assert_close(out, X_STAR.expand(6, 2), rtol=1e-10, atol=1e-10)


def test_euler_agrees_with_pushforward_for_euler_fm():
    """With euler_fm and the G input s ignored, f(x, s, t) = x - sigma_d (t - s) G is one Euler step."""
    ip = OTFM(sigma_d=SIGMA_D)

    class NoS(nn.Module):
        def forward(self, x, t, s, cond):
            return torch.tanh(x + t[:, None] * 1e-3)

    fm = FlowMap(NoS(), ip, "euler_fm", "none")
    x, ts = _x(seed=10), make_schedule(ip, 4)
    torch.testing.assert_close(Euler()(fm, x, ts), Pushforward()(fm, x, ts), rtol=1e-12, atol=1e-12)


# --- generate ----------------------------------------------------------------------------------------
def test_generate_batches_and_reproducibility():
    ip = OTFM(sigma_d=SIGMA_D)
    net = Tiny()
    fm = FlowMap(net, ip, "euler_fm", "s")
    samples, nfe = generate(fm, Pushforward(), 2, 10, (2,), generator=_gen(11), batch_size=4)
    assert samples.shape == (10, 2)
    assert torch.isfinite(samples).all()
    assert nfe == 2  # per sample
    assert net.calls == 3 * 2  # three batches (4, 4, 2), two steps each
    again, _ = generate(fm, Pushforward(), 2, 10, (2,), generator=_gen(11), batch_size=4)
    assert torch.equal(samples, again)
    other, _ = generate(fm, Pushforward(), 2, 10, (2,), generator=_gen(12), batch_size=4)
    assert not torch.allclose(samples, other)


@pytest.mark.parametrize("sampler,per_step", [(Pushforward, 1), (Restart, 1), (Euler, 1), (Heun, 2)], ids=SIDS)
def test_generate_reports_nfe_per_sample(sampler, per_step):
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Tiny(), ip, "euler_fm", "s")
    samples, nfe = generate(fm, sampler(), 3, 7, (2,), generator=_gen(13), batch_size=3)
    assert samples.shape == (7, 2)
    assert nfe == per_step * 3


def test_generate_zero_network_returns_prior_noise():
    """With G = 0 pushforward is the identity, so the samples are the prior draws, std sigma_d."""
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Zero(), ip, "euler_fm", "s")
    samples, _ = generate(fm, Pushforward(), 1, 4000, (2,), generator=_gen(14), batch_size=4000)
    torch.testing.assert_close(samples, ip.prior((4000, 2), _gen(14)), rtol=0, atol=0)
    assert samples.std().item() == pytest.approx(SIGMA_D, rel=0.05)


def test_generate_passes_cond_slices():
    ip = OTFM(sigma_d=SIGMA_D)
    seen = []

    class Rec(nn.Module):
        def forward(self, x, t, s, cond):
            seen.append(cond.clone())
            return torch.zeros_like(x)

    fm = FlowMap(Rec(), ip, "euler_fm", "s")
    cond = torch.arange(7)
    generate(fm, Pushforward(), 1, 7, (2,), generator=_gen(15), cond=cond, batch_size=3)
    assert [c.tolist() for c in seen] == [[0, 1, 2], [3, 4, 5], [6]]


def test_generate_image_shape():
    ip = OTFM(sigma_d=SIGMA_D)
    fm = FlowMap(Zero(), ip, "euler_fm", "s")
    samples, nfe = generate(fm, Pushforward(), 2, 5, (3, 4, 4), generator=_gen(16), batch_size=2)
    assert samples.shape == (5, 3, 4, 4) and nfe == 2


class LabelShift(nn.Module):
    def forward(self, x, t, s, cond):
        return torch.zeros_like(x) + cond[:, None].to(x.dtype)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SIDS)
def test_samplers_pass_guidance_to_the_flow_map(sampler):
    fm = FlowMap(LabelShift(), OTFM(SIGMA_D), "euler_fm", "s", num_classes=4)
    cond = torch.tensor([1, 2, 3])
    x = torch.zeros(3, 2, dtype=D64)
    ts = uniform_schedule(fm.interpolant, 2)
    plain = sampler()(fm, x, ts, cond, _gen(0))
    nfe = fm.nfe
    guided = sampler(guidance=2.0)(fm, x, ts, cond, _gen(0))
    assert fm.nfe - nfe == 2 * nfe  # every backbone call is a guided pair
    # G_w = G(null) + w (G(c) - G(null)) = 4 + 2 (c - 4): the guided run moves differently
    assert not torch.allclose(plain, guided)


@pytest.mark.parametrize("kind", ["uniform", "eta", "edm"])
def test_sigma_max_starts_the_grid_where_a_consistency_model_stopped_training(kind):
    """EDM sigma = sigma_d eta_t: sigma 80 is t = 80 / 80.5 under OT-FM with sigma_d 0.5 (T = 0.994 is sigma
    82.8); a sigma_max beyond sigma(T) leaves the grid at T."""
    from fewstep.samplers import make_schedule

    ip = OTFM(0.5)
    ts = make_schedule(ip, 2, kind, mid_etas=(1.642,), sigma_max=80.0)
    assert ts[0].item() == pytest.approx(80 / 80.5, abs=1e-12) and ts[-1].item() == ip.eps
    assert bool((ts[1:] < ts[:-1]).all())
    assert make_schedule(ip, 2, kind, mid_etas=(1.642,), sigma_max=1e6)[0].item() == ip.T


def test_mid_etas_beyond_the_start_are_refused_when_sigma_max_moves_it(regs):
    from fewstep.config import recipe_from_dict
    from fewstep.errors import RecipeError

    base = {"data": "eight_gaussians", "network": "mlp", "objective": "fm"}
    sampler = {"name": "restart", "schedule": "eta", "mid_etas": [100.0]}
    assert recipe_from_dict({**base, "sampler": sampler}, regs)  # inside (eta(eps), eta(T) = 165.7)
    with pytest.raises(RecipeError, match=r"sampler.mid_etas: \[100.0\] outside \(0.006036, 80\)"):
        recipe_from_dict({**base, "sampler": {**sampler, "sigma_max": 40.0}}, regs)  # eta 80 = sigma 40
