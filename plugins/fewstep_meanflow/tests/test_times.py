"""The pair of times (r, t) (MF §4; py-meanflow sample_two_timesteps_t_r_v0; docs/objectives.md §3.3): logit-normal
draws, swapped so t >= r, a per-row share of r != t rows, clipped to the interpolant's range."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fewstep.interpolants import OTFM
from fewstep_meanflow import MeanFlowConfig
from fewstep_meanflow.objective import MeanFlow

D64 = torch.float64
N = 20_000


def draw(n=N, seed=0, eps=0.0, T=1.0, **cfg):
    torch.manual_seed(seed)
    return MeanFlow(MeanFlowConfig(**cfg), OTFM(0.5, eps=eps, T=T)).sample_r_t(n, dtype=D64)


def logit(p):
    return torch.log(p / (1 - p)).numpy()


@pytest.mark.parametrize("share", [0.75, 0.25])
def test_share_of_rows_with_r_not_t_is_per_row_and_t_is_never_below_r(share):
    r, t = draw(share_r_neq_t=share)
    assert bool((r <= t).all())
    neq = (r != t).double()
    tol = 5 * math.sqrt(share * (1 - share) / N)
    assert abs(neq.mean().item() - share) < tol
    # drawn per row, not the first rows of the batch (the JAX code's data_proportion)
    for half in (neq[: N // 2], neq[N // 2:]):
        assert abs(half.mean().item() - share) < tol * math.sqrt(2)
    # no run structure: the r != t indicator of consecutive rows is uncorrelated
    assert abs(torch.corrcoef(torch.stack([neq[:-1], neq[1:]]))[0, 1].item()) < 5 / math.sqrt(N)


def test_share_zero_is_flow_matching_and_share_one_has_no_r_equal_t_rows():
    r, t = draw(share_r_neq_t=0.0)
    assert torch.equal(r, t)
    r, t = draw(share_r_neq_t=1.0)
    assert bool((r < t).all())


def test_t_is_the_max_and_r_the_min_of_two_logit_normal_draws():
    """logit t ~ max(N(m_t, s_t^2), N(m_r, s_r^2)) on every row (the swap happens before the r = t mask, so r = t
    rows carry the max too); on r != t rows logit r ~ the min. KS tests against P(max <= a) = F_t(a) F_r(a) and
    P(min <= a) = 1 - (1 - F_t(a))(1 - F_r(a)), and with a 10 % wrong scale to show they can fail."""
    m_t, s_t, m_r, s_r = -0.6, 1.6, -1.5, 0.8
    r, t = draw(logit_mean_t=m_t, logit_std_t=s_t, logit_mean_r=m_r, logit_std_r=s_r)
    neq = r != t

    def F(a, scale=1.0):
        return stats.norm.cdf(a, m_t, scale * s_t), stats.norm.cdf(a, m_r, scale * s_r)

    def cdf_max(a, scale=1.0):
        ft, fr = F(a, scale)
        return ft * fr

    def cdf_min(a, scale=1.0):
        ft, fr = F(a, scale)
        return 1 - (1 - ft) * (1 - fr)

    assert stats.kstest(logit(t), cdf_max).pvalue > 1e-3
    assert stats.kstest(logit(r[neq]), cdf_min).pvalue > 1e-3
    assert stats.kstest(logit(t), lambda a: cdf_max(a, 1.1)).pvalue < 1e-6
    assert stats.kstest(logit(r[neq]), lambda a: cdf_min(a, 1.1)).pvalue < 1e-6


def test_paper_defaults_pool_to_the_logit_normal_moments():
    """CIFAR-10 v0 draws t and r from the same law sigmoid(N(-2, 2^2)); the swap only reorders, so on r != t rows
    the pooled logits {logit t, logit r} have mean -2 and std 2."""
    r, t = draw()
    neq = r != t
    pooled = torch.cat([torch.as_tensor(logit(t[neq])), torch.as_tensor(logit(r[neq]))])
    n = pooled.numel()
    assert abs(pooled.mean().item() + 2.0) < 5 * 2.0 / math.sqrt(n / 2)  # pairs are dependent: n/2 is safe
    assert abs(pooled.std().item() / 2.0 - 1) < 0.03


def test_times_are_clipped_to_the_interpolant_range():
    r, t = draw(eps=0.1, T=0.9)
    assert r.min().item() == 0.1 and t.max().item() == 0.9  # the logit-normal(-2, 2) law reaches past both ends
    assert bool((r >= 0.1).all() and (t <= 0.9).all() and (r <= t).all())
    r0, t0 = draw()  # the same draws unclipped: clipping only moves values outside [eps, T]
    inside = (t0 > 0.1) & (t0 < 0.9)
    assert torch.equal(t[inside], t0[inside])
