"""TVM's times ([TVM] training/loss.py TVMLoss.sample_ts; docs/objectives.md §5.2 step 1): the gap, the
truncated terminal time, the start time and the independent FM time, against their laws (scipy)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fewstep.interpolants import OTFM
from fewstep_tvm.times import sample_times, truncated_logit_normal

N = 20_000


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def draws(ip=None, seed=0, **kw):
    torch.manual_seed(seed)
    return sample_times(ip or OTFM(0.5, 0.0, 1.0), N, **kw)


def test_t_is_s_plus_the_gap_and_stays_in_range():
    s, t, s_prime, gap = draws()
    assert all(v.dtype == torch.float64 and v.shape == (N,) for v in (s, t, s_prime, gap))
    assert bool((s >= 0).all() and (t <= 1).all() and (s_prime > 0).all() and (s_prime < 1).all())
    assert bool((s <= 1 - gap + 1e-15).all())  # the truncation: s <= 1 - l
    assert torch.allclose(t - s, gap, rtol=0, atol=4e-16)  # t = min(s + l, 1), hardly ever clamped
    assert bool((t > s).all())


def test_gap_and_fm_time_are_logit_normal():
    """l = sigmoid(N(-0.8, 1)) and s' = sigmoid(N(-0.4, 1)) (configs/im256_w2.yaml): KS tests on the logits,
    which see a 0.1 shift of the mean."""
    _, _, s_prime, gap = draws()
    for x, m in ((gap, -0.8), (s_prime, -0.4)):
        z = logit(x).numpy()
        assert stats.kstest(z, "norm", args=(m, 1.0)).pvalue > 1e-3
        assert stats.kstest(z, "norm", args=(m + 0.1, 1.0)).pvalue < 1e-6


def test_terminal_time_is_the_normal_truncated_at_logit_one_minus_gap():
    """Given l, logit(s) ~ N(-0.4, 1) truncated to (-inf, logit(1 - l)] (inverse-CDF sampling, as the official
    code): KS against scipy's truncnorm for one fixed gap, and for the draws of sample_times by the probability
    integral transform u = Phi(z) / Phi(b), which is U(0, 1) exactly when the law is right."""
    gap = torch.full((N,), 0.7, dtype=torch.float64)
    torch.manual_seed(1)
    z = logit(truncated_logit_normal(logit(1 - gap), -0.4, 1.0)).numpy()
    b = math.log(0.3 / 0.7) + 0.4
    assert stats.kstest(z, stats.truncnorm(-math.inf, b, loc=-0.4, scale=1.0).cdf).pvalue > 1e-3
    assert stats.kstest(z, "norm", args=(-0.4, 1.0)).pvalue < 1e-6  # untruncated is seen
    s, _, _, l_ = draws(seed=2)
    u = stats.norm.cdf(logit(s).numpy() + 0.4) / stats.norm.cdf(logit(1 - l_).numpy() + 0.4)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert (logit(s) <= logit(1 - l_) + 1e-9).all()


def test_extreme_bounds_stay_finite():
    """A gap near 1 leaves almost no room (s near 0); a gap near 0 hardly truncates."""
    torch.manual_seed(3)
    upper = torch.tensor([-30.0, -8.0, 0.0, 30.0], dtype=torch.float64)
    s = truncated_logit_normal(upper, -0.4, 1.0)
    assert bool(torch.isfinite(s).all()) and bool((s <= torch.sigmoid(upper) * (1 + 1e-12)).all())


def test_draw_order_is_gap_terminal_fm_time():
    """The draws are randn (gap), rand (terminal), randn (FM time), as [TVM] sample_ts makes them."""
    torch.manual_seed(4)
    s, t, s_prime, gap = sample_times(OTFM(0.5, 0.0, 1.0), 8)
    torch.manual_seed(4)
    lam = -0.8 + torch.randn(8, dtype=torch.float64)
    u = torch.rand(8, dtype=torch.float64)
    z = stats.norm.ppf(u.numpy() * stats.norm.cdf(-lam.numpy() + 0.4))
    n_prime = -0.4 + torch.randn(8, dtype=torch.float64)
    assert torch.allclose(gap, torch.sigmoid(lam), rtol=1e-14)
    assert torch.allclose(s, torch.sigmoid(torch.as_tensor(z - 0.4)), rtol=1e-10)
    assert torch.allclose(s_prime, torch.sigmoid(n_prime), rtol=1e-14)


@pytest.mark.parametrize("eps, T", [(0.0, 1.0), (0.006, 0.994)])
def test_other_ranges_are_mapped_affinely(eps, T):
    """On [0, 1] the draws are used as they are; on [eps, T], u -> eps + (T - eps) u."""
    base = draws(seed=5)
    mapped = draws(OTFM(0.5, eps, T), seed=5)
    for b, m in zip(base[:3], mapped[:3]):
        if (eps, T) == (0.0, 1.0):
            assert torch.equal(b, m)
        else:
            assert torch.allclose(m, eps + (T - eps) * b, rtol=1e-15)
            assert bool((m >= eps).all() and (m <= T).all())
