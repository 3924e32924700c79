"""FlowMap: the g / f / velocity wrapper and its three parameterisations (research/imm.md §3, §8)."""
import math

import pytest
import torch
from torch import nn

from fewstep.flowmap import PARAMETERISATIONS, FlowMap
from fewstep.interpolants import OTFM, VPCosine
from fewstep.networks.mlp import MLP

D64 = torch.float64
SIGMA_D = 0.5

# (interpolant class, parameterisation): euler_fm only with OT-FM
COMBOS = [(OTFM, "identity"), (OTFM, "simple_edm"), (OTFM, "euler_fm"),
          (VPCosine, "identity"), (VPCosine, "simple_edm")]
COMBO_IDS = [f"{c.name}-{p}" for c, p in COMBOS]
SECOND = ["s", "stride"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Tiny(nn.Module):
    """A fixed, smooth, deterministic backbone that depends on x, t, s and records its inputs."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        self.register_buffer("w", torch.randn(d, generator=_gen(seed), dtype=D64) + 1.5)
        self.calls = []

    def forward(self, x, t, s, cond):
        self.calls.append((x.detach().clone(), t.detach().clone(), None if s is None else s.detach().clone(), cond))
        flat = x.flatten(1)
        s_term = 0.0 if s is None else s[:, None] * 2e-3
        return torch.tanh(flat * self.w + t[:, None] * 1e-3 + s_term).view(x.shape)


class ExactDelta(nn.Module):
    """The exact backbone when the data is a single point x*: g(x_t, s, t) = x* for every x_t.

    It undoes c_in and c_noise from its inputs and inverts the parameterisation's g coefficients.
    """

    def __init__(self, x_star, interpolant, param, time_scale=1000.0):
        super().__init__()
        self.x_star, self.ip, self.param, self.time_scale = x_star, interpolant, param, time_scale

    def forward(self, u, tau, s, cond):
        ip = self.ip
        t = tau / self.time_scale
        c_in = 1.0 / (ip.sigma_d * torch.sqrt(ip.alpha(t) ** 2 + ip.sigma(t) ** 2))
        x_t = u / c_in[:, None]
        c_skip, c_out = self.param.g(ip, t)
        return (self.x_star - c_skip[:, None] * x_t) / c_out[:, None]


def _fm(cls, param, second="s", d=3, net=None, **kw):
    ip = cls(sigma_d=SIGMA_D)
    net = Tiny(d) if net is None else net
    return FlowMap(net, ip, param, second, **kw)


def _batch(b=8, d=3, seed=0):
    g = _gen(seed)
    x_t = torch.randn(b, d, generator=g, dtype=D64)
    t = torch.rand(b, generator=g, dtype=D64) * 0.9 + 0.08
    s = t * torch.rand(b, generator=g, dtype=D64)
    return x_t, s, t


# --- boundary and closed forms ---------------------------------------------------------------------
@pytest.mark.parametrize("second", SECOND)
@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_boundary_f_at_equal_times_is_identity(cls, param, second):
    fm = _fm(cls, param, second)
    x_t, _, t = _batch()
    torch.testing.assert_close(fm.f(x_t, t, t), x_t, rtol=1e-6, atol=1e-6)
    c_skip, c_out = fm.coefficients(t, t)
    torch.testing.assert_close(c_skip, torch.ones_like(t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_out, torch.zeros_like(t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("second", SECOND)
@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_f_is_ddim_of_g(cls, param, second):
    fm = _fm(cls, param, second)
    x_t, s, t = _batch(seed=1)
    f = fm.f(x_t, s, t)
    via_g = fm.interpolant.ddim(x_t, fm.g(x_t, s, t), s, t)
    torch.testing.assert_close(f, via_g, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(f, x_t)  # a real step, not the identity


@pytest.mark.parametrize("second", SECOND)
def test_f_is_ddim_of_g_with_mlp(second):
    torch.manual_seed(0)
    net = MLP((3,), width=32, depth=2, emb_dim=16, second_time=True).double()
    fm = FlowMap(net, OTFM(sigma_d=SIGMA_D), "simple_edm", second)
    x_t, s, t = _batch(seed=2)
    torch.testing.assert_close(fm.f(x_t, s, t), fm.interpolant.ddim(x_t, fm.g(x_t, s, t), s, t),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("second", SECOND)
@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_g_coefficients_match_table(cls, param, second):
    fm = _fm(cls, param, second)
    ip = fm.interpolant
    x_t, s, t = _batch(seed=3)
    G = fm.G(x_t, s, t)
    a, sg = ip.alpha(t)[:, None], ip.sigma(t)[:, None]
    n = torch.sqrt(a * a + sg * sg)
    expected = {
        "identity": G,
        "simple_edm": a / n**2 * x_t - SIGMA_D * sg / n * G,
        "euler_fm": x_t - SIGMA_D * t[:, None] * G,
    }[param]
    torch.testing.assert_close(fm.g(x_t, s, t), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("second", SECOND)
def test_euler_fm_closed_form(second):
    fm = _fm(OTFM, "euler_fm", second)
    x_t, s, t = _batch(seed=4)
    G = fm.G(x_t, s, t)
    torch.testing.assert_close(fm.f(x_t, s, t), x_t - SIGMA_D * (t - s)[:, None] * G, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("second", SECOND)
def test_simple_edm_cosine_closed_form(second):
    """IMM App. C.5: with the cosine schedule, f = cos(pi(t-s)/2) x_t - sin(pi(t-s)/2) sigma_d G."""
    fm = _fm(VPCosine, "simple_edm", second)
    x_t, s, t = _batch(seed=5)
    G = fm.G(x_t, s, t)
    d = (0.5 * math.pi * (t - s))[:, None]
    torch.testing.assert_close(fm.f(x_t, s, t), torch.cos(d) * x_t - torch.sin(d) * SIGMA_D * G,
                               rtol=1e-10, atol=1e-12)


def test_euler_fm_residual_identity():
    """research/imm.md §8: f(x_t, s, t) - DDIM(x_t, x, s, t) = (t - s)((eps - x) - sigma_d G)."""
    fm = _fm(OTFM, "euler_fm", "s")
    ip = fm.interpolant
    g = _gen(6)
    x = torch.randn(8, 3, generator=g, dtype=D64)
    noise = ip.prior((8, 3), g, dtype=D64)
    _, s, t = _batch(seed=7)
    x_t = ip.interpolate(x, noise, t)
    lhs = fm.f(x_t, s, t) - ip.ddim(x_t, x, s, t)
    rhs = (t - s)[:, None] * ((noise - x) - SIGMA_D * fm.G(x_t, s, t))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)


def _delta_setup(cls, param, noise_seed, batch_seed):
    """A flow map whose network is exact for data = a single point x*, and x_t drawn from it."""
    ip = cls(sigma_d=SIGMA_D)
    x_star = torch.tensor([[0.3, -1.2, 0.7]], dtype=D64).expand(8, 3)
    fm = FlowMap(ExactDelta(x_star, ip, PARAMETERISATIONS[param]()), ip, param, "s")
    noise = ip.prior((8, 3), _gen(noise_seed), dtype=D64)
    _, s, t = _batch(seed=batch_seed)
    return ip, fm, x_star, noise, ip.interpolate(x_star, noise, t), s, t


@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_exact_delta_network_gives_the_ddim_interpolant(cls, param):
    """With g = x* exactly, f(x_t, s, t) = DDIM(x_t, x*, s, t) = alpha_s x* + sigma_s eps."""
    ip, fm, x_star, noise, x_t, s, t = _delta_setup(cls, param, noise_seed=8, batch_seed=9)
    torch.testing.assert_close(fm.g(x_t, s, t), x_star, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fm.f(x_t, s, t), ip.interpolate(x_star, noise, s), rtol=1e-10, atol=1e-10)


# --- velocity --------------------------------------------------------------------------------------
# Regression: velocity once returned -(d_skip x_t + d_out G), i.e. -dx/dt, so Euler/Heun stepped away
# from the data while f (pushforward) was right. The tests below and the delta tests in
# test_samplers.py pin the sign: v = +d f(x_t, s, t)/ds at s = t.
@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_velocity_is_derivative_of_f_in_s(cls, param):
    """The ODE velocity dx/dt = lim (x_t - f(x_t, t - h, t)) / h, G held fixed (second_time="none")."""
    fm = _fm(cls, param, "none")
    x_t, _, t = _batch(seed=10)
    h = 1e-6
    fd = (fm.f(x_t, t + h, t) - fm.f(x_t, t - h, t)) / (2 * h)
    one_sided = (x_t - fm.f(x_t, t - h, t)) / h
    torch.testing.assert_close(fd, one_sided, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fm.velocity(x_t, t), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("second", ["none", "s", "stride"])
def test_euler_fm_velocity_is_sigma_d_G(second):
    fm = _fm(OTFM, "euler_fm", second)
    x_t, _, t = _batch(seed=11)
    torch.testing.assert_close(fm.velocity(x_t, t), SIGMA_D * fm.G(x_t, t, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_exact_delta_network_velocity_is_conditional_velocity(cls, param):
    """For a delta at x*, the ODE velocity is the interpolant's alpha'_t x* + sigma'_t eps (the FM target)."""
    ip, fm, x_star, noise, x_t, _, t = _delta_setup(cls, param, noise_seed=12, batch_seed=13)
    torch.testing.assert_close(fm.velocity(x_t, t), ip.velocity(x_star, noise, t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("second", SECOND)
def test_velocity_evaluates_G_at_s_equal_t(second):
    fm = _fm(OTFM, "euler_fm", second)
    x_t, _, t = _batch(seed=14)
    fm.velocity(x_t, t)
    (_, tau, e2, _), = fm.net.calls
    torch.testing.assert_close(tau, 1000.0 * t, rtol=0, atol=0)
    expected = 1000.0 * t if second == "s" else torch.zeros_like(t)
    torch.testing.assert_close(e2, expected, rtol=0, atol=0)


# --- inputs to the network -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [OTFM, VPCosine], ids=["ot_fm", "vp_cosine"])
@pytest.mark.parametrize("sigma_d", [0.5, 1.7])
def test_c_in_normalises_the_input(cls, sigma_d):
    ip = cls(sigma_d=sigma_d)
    fm = FlowMap(Tiny(3), ip, "simple_edm", "s")
    t = torch.linspace(0.0, 0.99, 23, dtype=D64)
    prod = fm.c_in(t) * torch.sqrt(ip.alpha(t) ** 2 + ip.sigma(t) ** 2) * sigma_d
    torch.testing.assert_close(prod, torch.ones_like(t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("second", ["none", "s", "stride"])
@pytest.mark.parametrize("time_scale", [1000.0, 250.0])
def test_network_inputs(second, time_scale):
    fm = _fm(OTFM, "simple_edm", second, time_scale=time_scale)
    x_t, s, t = _batch(seed=15)
    cond = torch.arange(8)
    fm.f(x_t, s, t, cond)
    (u, tau, e2, c), = fm.net.calls
    torch.testing.assert_close(u, fm.c_in(t)[:, None] * x_t, rtol=1e-14, atol=0)
    torch.testing.assert_close(tau, time_scale * t, rtol=1e-14, atol=0)
    if second == "none":
        assert e2 is None
    elif second == "s":
        torch.testing.assert_close(e2, time_scale * s, rtol=1e-14, atol=0)
    else:
        torch.testing.assert_close(e2, time_scale * (t - s), rtol=1e-14, atol=0)
    assert c is cond


def test_scalar_and_float_times_expand_to_batch():
    fm = _fm(OTFM, "euler_fm", "stride")
    x_t = torch.randn(5, 3, generator=_gen(16), dtype=D64)
    out = fm.f(x_t, torch.tensor(0.2, dtype=D64), 0.7)
    (_, tau, e2, _), = fm.net.calls
    assert tau.shape == (5,) and e2.shape == (5,)
    assert tau.dtype == D64
    torch.testing.assert_close(tau, torch.full((5,), 700.0, dtype=D64))
    torch.testing.assert_close(e2, torch.full((5,), 500.0, dtype=D64))
    per_sample = fm.f(x_t, torch.full((5,), 0.2, dtype=D64), torch.full((5,), 0.7, dtype=D64))
    torch.testing.assert_close(out, per_sample, rtol=1e-14, atol=1e-14)


def test_image_shaped_input():
    fm = _fm(OTFM, "simple_edm", "s", d=3 * 4 * 4)
    g = _gen(17)
    x_t = torch.randn(4, 3, 4, 4, generator=g, dtype=D64)
    t = torch.rand(4, generator=g, dtype=D64) * 0.9 + 0.05
    s = t / 2
    f = fm.f(x_t, s, t)
    assert f.shape == x_t.shape
    torch.testing.assert_close(f, fm.interpolant.ddim(x_t, fm.g(x_t, s, t), s, t), rtol=1e-10, atol=1e-10)


def test_nfe_counts_every_backbone_call():
    fm = _fm(OTFM, "euler_fm", "s")
    x_t, s, t = _batch(seed=18)
    assert fm.nfe == 0
    fm.G(x_t, s, t)
    assert fm.nfe == 1
    fm.g(x_t, s, t)
    assert fm.nfe == 2
    fm.f(x_t, s, t)
    assert fm.nfe == 3
    fm.velocity(x_t, t)
    assert fm.nfe == 4
    fm.coefficients(s, t)  # no backbone call
    assert fm.nfe == 4
    assert len(fm.net.calls) == 4


@pytest.mark.parametrize("cls,param", COMBOS, ids=COMBO_IDS)
def test_coefficients_and_kernel_bandwidth(cls, param):
    fm = _fm(cls, param)
    ip = fm.interpolant
    _, s, t = _batch(seed=19)
    c_skip, c_out = fm.coefficients(s, t)
    a_s, s_s, a_t, s_t = ip.alpha(s), ip.sigma(s), ip.alpha(t), ip.sigma(t)
    # IMM kernel bandwidth 1/|c_out(s,t)| (research/imm.md §4.5)
    bw = {
        "identity": (s_t / (a_s * s_t - s_s * a_t)).abs(),
        "simple_edm": torch.sqrt(a_t**2 + s_t**2) / (SIGMA_D * (a_s * s_t - s_s * a_t).abs()),
        "euler_fm": 1.0 / (SIGMA_D * (t - s)),
    }[param]
    torch.testing.assert_close(1.0 / c_out.abs(), bw, rtol=1e-10, atol=0)
    assert c_skip.shape == t.shape


# --- constructor -------------------------------------------------------------------------------------
def test_rejects_euler_fm_with_cosine():
    with pytest.raises(ValueError, match="euler_fm"):
        FlowMap(Tiny(3), VPCosine(), "euler_fm")


def test_rejects_unknown_parameterisation():
    with pytest.raises(ValueError, match="unknown parameterisation"):
        FlowMap(Tiny(3), OTFM(), "v_prediction")


def test_rejects_unknown_second_time():
    with pytest.raises(ValueError, match="second_time"):
        FlowMap(Tiny(3), OTFM(), "euler_fm", "both")


# --- classifier-free guidance on G (IMM Eq. 14, App. E) ---------------------------------------------
class Labelled(nn.Module):
    """G = tanh(x) + e[label]: a known output per label, the null class included."""

    def __init__(self, num_classes=3, d=2):
        super().__init__()
        self.e = torch.arange((num_classes + 1) * d, dtype=D64).reshape(num_classes + 1, d) / 10
        self.batches = []

    def forward(self, x, t, s, cond):
        self.batches.append(x.shape[0])
        return torch.tanh(x) + self.e[cond]


@pytest.mark.parametrize("w", [0.0, 1.5, 4.0])
def test_guidance_combines_conditional_and_null_outputs_of_G(w):
    net = Labelled()
    fm = FlowMap(net, OTFM(SIGMA_D), "euler_fm", "s", num_classes=3)
    x_t, s, t = _batch(6, 2)
    cond = torch.tensor([0, 1, 2, 0, 1, 2])
    guided = fm.G(x_t, s, t, cond, guidance=w)
    u = x_t * fm.c_in(t)[:, None]
    g_c, g_0 = torch.tanh(u) + net.e[cond], torch.tanh(u) + net.e[3]
    assert torch.allclose(guided, g_0 + w * (g_c - g_0))
    assert net.batches == [12] and fm.nfe == 2  # one batched call, two NFE per sample
    f = fm.f(x_t, s, t, cond, guidance=w)  # f combines the guided G, not guided f's
    c_skip, c_out = fm.coefficients(s, t)
    assert torch.allclose(f, c_skip[:, None] * x_t + c_out[:, None] * (g_0 + w * (g_c - g_0)))


def test_guidance_one_or_no_labels_is_a_single_plain_call():
    net = Labelled()
    fm = FlowMap(net, OTFM(SIGMA_D), "euler_fm", "s", num_classes=3)
    x_t, s, t = _batch(4, 2)
    cond = torch.tensor([0, 1, 2, 0])
    assert torch.equal(fm.G(x_t, s, t, cond, guidance=1.0), fm.G(x_t, s, t, cond))
    assert net.batches == [4, 4] and fm.nfe == 2
    with pytest.raises(ValueError, match="unconditional"):
        FlowMap(net, OTFM(SIGMA_D), "euler_fm", "s").null_labels(cond)


def test_with_net_keeps_every_setting():
    fm = FlowMap(Tiny(3), VPCosine(SIGMA_D), "simple_edm", "stride", time_scale=250.0, num_classes=7)
    other = fm.with_net(Tiny(3, seed=1))
    assert (other.param.name, other.second_time, other.time_scale, other.num_classes, other.interpolant) == (
        "simple_edm", "stride", 250.0, 7, fm.interpolant)


# --- grouped times: one (s, t) per group of consecutive samples -----------------------------------
class _Recorder(torch.nn.Module):
    """Wraps a backbone and records the shape of the times it was given."""

    def __init__(self, net, grouped: bool):
        super().__init__()
        self.inner, self.grouped_times, self.seen = net, grouped, []

    def forward(self, x, t, s=None, cond=None):
        self.seen.append((tuple(t.shape), None if s is None else tuple(s.shape)))
        return self.inner(x, t, s, cond)


@pytest.mark.parametrize("grouped", [True, False])
def test_grouped_times_equal_per_sample_times(grouped):
    from fewstep.interpolants import OTFM
    from fewstep.networks.mlp import MLP

    torch.manual_seed(0)
    net = _Recorder(MLP((3,), width=32, depth=2, emb_dim=16, num_classes=5), grouped)
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s", num_classes=5)
    x, cond = torch.randn(12, 3), torch.randint(0, 5, (12,))
    t = torch.rand(4) * 0.9 + 0.05
    s = t * torch.rand(4)
    grouped_out = fm.f(x, s, t, cond, guidance=1.5)
    per_sample = fm.f(x, s.repeat_interleave(3), t.repeat_interleave(3), cond, guidance=1.5)
    torch.testing.assert_close(grouped_out, per_sample, rtol=1e-5, atol=1e-6)
    # a grouped-time backbone embeds each distinct time once; others are handed per-sample times
    assert net.seen[0] == (((8,), (8,)) if grouped else ((24,), (24,)))  # CFG: 2B rows
    fm.f(x, 0.1, 0.5)
    assert net.seen[-1] == (((1,), (1,)) if grouped else ((12,), (12,)))  # a sampling step: one time


def test_times_that_do_not_group_the_batch_are_refused():
    from fewstep.interpolants import OTFM
    from fewstep.networks.mlp import MLP

    fm = FlowMap(MLP((2,), width=8, depth=1, emb_dim=4), OTFM(0.5), "euler_fm", "s")
    with pytest.raises(ValueError, match=r"times of shape \(5,\) do not group a batch of 12"):
        fm.f(torch.randn(12, 2), torch.zeros(5), torch.ones(5) * 0.5)


def test_drop_labels_replaces_a_fraction_p_with_the_null_class():
    from fewstep.interpolants import OTFM
    from fewstep.networks.mlp import MLP

    fm = FlowMap(MLP((2,), width=8, depth=1, emb_dim=4, num_classes=10), OTFM(0.5), "euler_fm", "s", num_classes=10)
    cond = torch.arange(10).repeat(2000)
    torch.manual_seed(0)
    dropped = fm.drop_labels(cond, 0.1)
    null = dropped == 10
    assert 0.09 < null.float().mean().item() < 0.11
    assert torch.equal(dropped[~null], cond[~null])
    assert fm.drop_labels(cond, 0.0) is cond and fm.drop_labels(None, 0.5) is None
