"""Interpolants: schedules, derivatives, eta / lambda closed forms, DDIM identities, prior (research/imm.md §1-2)."""
import math

import pytest
import torch

from fewstep.interpolants import OTFM, VPCosine

D64 = torch.float64
CLASSES = [OTFM, VPCosine]
IDS = ["ot_fm", "vp_cosine"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ts(n: int = 41, lo: float = 0.02, hi: float = 0.98) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=D64)


# --- schedule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_boundaries(cls):
    ip = cls(eps=0.0, T=1.0)
    zero, one = torch.tensor(0.0, dtype=D64), torch.tensor(1.0, dtype=D64)
    assert abs(ip.alpha(zero).item() - 1.0) <= 1e-12
    assert abs(ip.sigma(one).item() - 1.0) <= 1e-12
    assert abs(ip.alpha(one).item()) <= 1e-12
    assert abs(ip.sigma(zero).item()) <= 1e-12


def test_otfm_boundaries_exact():
    ip = OTFM(eps=0.0, T=1.0)
    t = torch.tensor([0.0, 1.0], dtype=D64)
    assert ip.alpha(t).tolist() == [1.0, 0.0]
    assert ip.sigma(t).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("name", ["alpha", "sigma"])
def test_derivatives_match_finite_differences(cls, name):
    ip = cls()
    t, h = _ts(), 1e-6
    f, df = getattr(ip, name), getattr(ip, "d_" + name)
    fd = (f(t + h) - f(t - h)) / (2 * h)
    torch.testing.assert_close(df(t), fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_d_lam_matches_finite_differences(cls):
    ip = cls()
    t, h = _ts(), 1e-6
    fd = (ip.lam(t + h) - ip.lam(t - h)) / (2 * h)
    torch.testing.assert_close(ip.d_lam(t), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_d_lam_matches_base_class_formula(cls):
    """The closed-form override equals 2 (alpha'/alpha - sigma'/sigma)."""
    ip = cls()
    t = _ts()
    generic = 2.0 * (ip.d_alpha(t) / ip.alpha(t) - ip.d_sigma(t) / ip.sigma(t))
    torch.testing.assert_close(ip.d_lam(t), generic, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_eta_is_sigma_over_alpha_and_round_trips(cls):
    ip = cls()
    t = _ts()
    torch.testing.assert_close(ip.eta(t), ip.sigma(t) / ip.alpha(t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ip.eta_inv(ip.eta(t)), t, rtol=1e-12, atol=1e-12)
    etas = torch.tensor([0.0, 0.01, 0.5, 1.0, 1.4, 10.0, 165.0], dtype=D64)
    torch.testing.assert_close(ip.eta(ip.eta_inv(etas)), etas, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_lam_is_twice_log_alpha_over_sigma(cls):
    ip = cls()
    t = _ts()
    expected = 2.0 * torch.log(ip.alpha(t) / ip.sigma(t))
    torch.testing.assert_close(ip.lam(t), expected, rtol=1e-12, atol=1e-12)


def test_otfm_closed_forms():
    ip = OTFM()
    t = _ts()
    torch.testing.assert_close(ip.alpha(t), 1 - t, rtol=0, atol=0)
    torch.testing.assert_close(ip.sigma(t), t, rtol=0, atol=0)
    torch.testing.assert_close(ip.eta(t), t / (1 - t), rtol=1e-14, atol=0)
    eta = ip.eta(t)
    torch.testing.assert_close(ip.eta_inv(eta), eta / (1 + eta), rtol=1e-14, atol=0)
    torch.testing.assert_close(ip.lam(t), 2 * (torch.log(1 - t) - torch.log(t)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(-ip.d_lam(t), 2 / (t * (1 - t)), rtol=1e-12, atol=0)
    # the IMM endpoint eta(T) = 0.994 / 0.006 (research/imm.md §1)
    assert ip.eta(torch.tensor(0.994, dtype=D64)).item() == pytest.approx(0.994 / 0.006, rel=1e-12)


def test_vp_cosine_closed_forms():
    ip = VPCosine()
    t = _ts()
    a = t * math.pi / 2
    torch.testing.assert_close(ip.alpha(t), torch.cos(a), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ip.sigma(t), torch.sin(a), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ip.eta(t), torch.tan(a), rtol=1e-12, atol=1e-14)
    eta = ip.eta(t)
    torch.testing.assert_close(ip.eta_inv(eta), (2 / math.pi) * torch.atan(eta), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ip.lam(t), -2 * torch.log(torch.tan(a)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(-ip.d_lam(t), math.pi / (torch.sin(a) * torch.cos(a)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("sigma_d", [0.5, 1.3])
def test_edm_sigma_round_trip(cls, sigma_d):
    ip = cls(sigma_d=sigma_d)
    t = _ts()
    sig = ip.to_edm_sigma(t)
    torch.testing.assert_close(sig, sigma_d * ip.eta(t), rtol=1e-14, atol=0)
    torch.testing.assert_close(ip.from_edm_sigma(sig), t, rtol=1e-12, atol=1e-12)
    # and the other way round, from EDM noise levels
    sigmas = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=D64)
    torch.testing.assert_close(ip.to_edm_sigma(ip.from_edm_sigma(sigmas)), sigmas, rtol=1e-10, atol=1e-12)


# --- DDIM ----------------------------------------------------------------------------------------
def _xs(shape=(16, 3), seed=0):
    g = _gen(seed)
    return torch.randn(shape, generator=g, dtype=D64), torch.randn(shape, generator=g, dtype=D64)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ddim_identity_at_equal_times(cls):
    ip = cls()
    x_t, x = _xs()
    t = torch.rand(16, generator=_gen(1), dtype=D64) * 0.9 + 0.05
    torch.testing.assert_close(ip.ddim(x_t, x, t, t), x_t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ddim_to_zero_gives_x(cls):
    ip = cls(eps=0.0)
    x_t, x = _xs()
    t = torch.rand(16, generator=_gen(2), dtype=D64) * 0.9 + 0.05
    s = torch.zeros(16, dtype=D64)
    torch.testing.assert_close(ip.ddim(x_t, x, s, t), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ddim_from_one_is_the_forward_process(cls):
    ip = cls(eps=0.0, T=1.0)
    noise, x = _xs()
    t = torch.rand(16, generator=_gen(3), dtype=D64)
    one = torch.ones(16, dtype=D64)
    expected = ip.alpha(t)[:, None] * x + ip.sigma(t)[:, None] * noise
    torch.testing.assert_close(ip.ddim(noise, x, t, one), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ip.ddim(noise, x, t, one), ip.interpolate(x, noise, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ddim_self_consistency(cls):
    ip = cls()
    x_t, x = _xs()
    g = _gen(4)
    u = torch.sort(torch.rand(16, 3, generator=g, dtype=D64) * 0.98 + 0.01, dim=1).values
    s, r, t = u[:, 0], u[:, 1], u[:, 2]
    two_steps = ip.ddim(ip.ddim(x_t, x, r, t), x, s, r)
    torch.testing.assert_close(two_steps, ip.ddim(x_t, x, s, t), rtol=1e-10, atol=1e-12)
    # the composite really differs from x_t: the check is not vacuous
    assert not torch.allclose(two_steps, x_t)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_ddim_reuses_the_noise_of_x_t(cls):
    ip = cls()
    x, noise = _xs(seed=5)
    g = _gen(6)
    t = torch.rand(16, generator=g, dtype=D64) * 0.9 + 0.05
    r = t * torch.rand(16, generator=g, dtype=D64)
    x_t = ip.interpolate(x, noise, t)
    torch.testing.assert_close(ip.ddim(x_t, x, r, t), ip.interpolate(x, noise, r), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_velocity_is_time_derivative_of_interpolate(cls):
    ip = cls()
    x, noise = _xs(seed=7)
    t = torch.rand(16, generator=_gen(8), dtype=D64) * 0.9 + 0.05
    h = 1e-6
    fd = (ip.interpolate(x, noise, t + h) - ip.interpolate(x, noise, t - h)) / (2 * h)
    torch.testing.assert_close(ip.velocity(x, noise, t), fd, rtol=1e-6, atol=1e-7)


# --- prior, broadcasting, constructor -------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_prior_std_is_sigma_d(cls):
    ip = cls(sigma_d=0.5)
    z = ip.prior((200_000,), _gen(9), dtype=D64)
    assert z.shape == (200_000,) and z.dtype == D64
    assert z.std().item() == pytest.approx(0.5, rel=0.01)
    assert abs(z.mean().item()) < 0.01
    # seeded: reproducible
    assert torch.equal(ip.prior((5, 2), _gen(3)), ip.prior((5, 2), _gen(3)))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("shape", [(6, 2), (6, 3, 4, 4)])
def test_per_sample_times_broadcast(cls, shape):
    ip = cls()
    x, noise = _xs(shape, seed=10)
    g = _gen(11)
    t = torch.rand(shape[0], generator=g, dtype=D64) * 0.9 + 0.05
    s = t * torch.rand(shape[0], generator=g, dtype=D64)
    x_t = ip.interpolate(x, noise, t)
    v = ip.velocity(x, noise, t)
    y = ip.ddim(x_t, x, s, t)
    for out in (x_t, v, y):
        assert out.shape == shape
    for b in range(shape[0]):
        tb, sb = t[b], s[b]
        torch.testing.assert_close(x_t[b], ip.alpha(tb) * x[b] + ip.sigma(tb) * noise[b])
        torch.testing.assert_close(v[b], ip.d_alpha(tb) * x[b] + ip.d_sigma(tb) * noise[b])
        ratio = ip.sigma(sb) / ip.sigma(tb)
        torch.testing.assert_close(y[b], (ip.alpha(sb) - ratio * ip.alpha(tb)) * x[b] + ratio * x_t[b])


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_scalar_time_broadcasts(cls):
    ip = cls()
    x, noise = _xs((4, 3, 2, 2), seed=12)
    t = torch.tensor(0.3, dtype=D64)
    expected = ip.alpha(t) * x + ip.sigma(t) * noise
    torch.testing.assert_close(ip.interpolate(x, noise, t), expected)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("eps,T", [(0.5, 0.5), (0.6, 0.5), (-0.1, 0.9), (0.0, 1.5)])
def test_constructor_rejects_bad_range(cls, eps, T):
    with pytest.raises(ValueError):
        cls(eps=eps, T=T)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_constructor_stores_range(cls):
    ip = cls(sigma_d=0.7, eps=0.0, T=1.0)
    assert (ip.sigma_d, ip.eps, ip.T) == (0.7, 0.0, 1.0)
    ip = cls()
    assert (ip.sigma_d, ip.eps, ip.T) == (0.5, 0.006, 0.994)
