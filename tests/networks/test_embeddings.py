"""fewstep.networks.embeddings: sinusoidal features, the time MLP and t + s + label conditioning."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.networks.embeddings import Conditioning, TimeEmbedding, sinusoidal


def test_sinusoidal_matches_the_closed_form():
    t = torch.tensor([0.0, 1.0, 250.0, 999.0])
    dim, period = 8, 10_000.0
    emb = sinusoidal(t, dim)
    assert emb.shape == (4, 8) and emb.dtype == torch.float32
    for i, ti in enumerate(t.tolist()):
        for k in range(dim // 2):
            w = period ** (-k / (dim // 2))
            assert emb[i, k].item() == pytest.approx(math.cos(ti * w), abs=2e-4)
            assert emb[i, dim // 2 + k].item() == pytest.approx(math.sin(ti * w), abs=2e-4)


def test_sinusoidal_at_zero_and_with_another_period():
    emb = sinusoidal(torch.zeros(1), 6)
    assert emb.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    t = torch.tensor([3.0])
    assert sinusoidal(t, 4, max_period=100.0)[0].tolist() == pytest.approx(
        [math.cos(3.0), math.cos(0.3), math.sin(3.0), math.sin(0.3)], abs=1e-6)


def test_sinusoidal_pads_an_odd_dimension_with_a_zero_column():
    t = torch.tensor([5.0, 7.0])
    odd, even = sinusoidal(t, 7), sinusoidal(t, 6)
    assert odd.shape == (2, 7)
    torch.testing.assert_close(odd[:, :6], even)
    assert odd[:, 6].tolist() == [0.0, 0.0]


def test_sinusoidal_takes_any_float_dtype_and_returns_float32():
    t64 = torch.tensor([123.0], dtype=torch.float64)
    torch.testing.assert_close(sinusoidal(t64, 8), sinusoidal(t64.float(), 8))


def test_time_embedding_is_the_mlp_of_the_features():
    torch.manual_seed(0)
    emb = TimeEmbedding(5, freq_dim=6)
    t = torch.tensor([0.0, 500.0, 990.0])
    h = sinusoidal(t, 6)
    lin1, lin2 = emb.mlp[0], emb.mlp[2]
    want = lin2(torch.nn.functional.silu(lin1(h)))
    torch.testing.assert_close(emb(t), want)
    assert emb(t).shape == (3, 5)


def test_time_embedding_follows_the_weights_dtype():
    emb = TimeEmbedding(4, freq_dim=8).double()
    assert emb(torch.tensor([1.0, 2.0])).dtype == torch.float64


def _cond(**kw):
    torch.manual_seed(0)
    return Conditioning(6, freq_dim=8, **kw)


def test_conditioning_sums_t_s_and_label_embeddings():
    c = _cond(second_time=True, num_classes=3)
    t, s, y = torch.tensor([900.0, 400.0]), torch.tensor([100.0, 50.0]), torch.tensor([2, 0])
    want = c.t_embed(t) + c.s_embed(s) + c.label_embed.weight[y]
    torch.testing.assert_close(c(t, s, y), want)
    assert c.label_embed.num_embeddings == 4  # one extra row: the null class


def test_conditioning_without_labels_uses_the_null_class():
    c = _cond(second_time=True, num_classes=3)
    t, s = torch.tensor([900.0, 400.0]), torch.tensor([100.0, 50.0])
    torch.testing.assert_close(c(t, s, None), c(t, s, torch.tensor([3, 3])))


def test_conditioning_without_a_second_time_ignores_s_and_without_classes_has_no_table():
    c = _cond(second_time=False, num_classes=None)
    assert c.s_embed is None and c.label_embed is None
    t = torch.tensor([10.0, 20.0])
    torch.testing.assert_close(c(t, None, None), c.t_embed(t))
    torch.testing.assert_close(c(t, torch.tensor([1.0, 2.0]), torch.tensor([0, 1])), c.t_embed(t))


def test_conditioning_built_with_a_second_time_needs_s():
    with pytest.raises(ValueError, match="second time input; pass s"):
        _cond(second_time=True, num_classes=None)(torch.tensor([1.0]), None, None)


def test_grouped_times_give_the_per_sample_embeddings():
    c = _cond(second_time=True, num_classes=5)
    t, s = torch.tensor([900.0, 300.0]), torch.tensor([100.0, 30.0])  # 2 groups
    y = torch.tensor([0, 1, 2, 3, 4, 0])  # of 3 samples each
    grouped = c(t, s, y, n=6)
    per_sample = c(t.repeat_interleave(3), s.repeat_interleave(3), y)
    torch.testing.assert_close(grouped, per_sample)
    one = c(t[:1], s[:1], None, n=4)  # one time for the whole batch
    torch.testing.assert_close(one, c(t[:1].expand(4), s[:1].expand(4), None))


def test_time_embeddings_stay_float32_under_autocast():
    from fewstep.networks.embeddings import TimeEmbedding

    emb = TimeEmbedding(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert emb(torch.tensor([1.0, 500.0])).dtype == torch.float32
