"""The MLP backbone net(x, t, s, cond) and its time / label embeddings."""
import pytest
import torch

from fewstep.networks.embeddings import Conditioning, sinusoidal
from fewstep.networks.mlp import MLP


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(shape, b=5, seed=0):
    g = _gen(seed)
    x = torch.randn(b, *shape, generator=g)
    t = torch.rand(b, generator=g) * 1000
    s = t * torch.rand(b, generator=g)
    return x, t, s


def _mlp(shape=(2,), **kw):
    torch.manual_seed(0)
    kw = {"width": 32, "depth": 2, "emb_dim": 16, **kw}
    return MLP(shape, **kw).eval()


@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)])
def test_output_shape_equals_input_shape(shape):
    net = _mlp(shape)
    x, t, s = _inputs(shape)
    out = net(x, t, s)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_double_precision():
    net = _mlp((3, 4, 4)).double()
    x, t, s = _inputs((3, 4, 4))
    out = net(x.double(), t.double(), s.double())
    assert out.dtype == torch.float64 and out.shape == (5, 3, 4, 4)


def test_deterministic_for_fixed_seed():
    x, t, s = _inputs((2,))
    torch.testing.assert_close(_mlp()(x, t, s), _mlp()(x, t, s), rtol=0, atol=0)


def test_second_time_changes_output():
    net = _mlp(second_time=True)
    x, t, s = _inputs((2,))
    a, b = net(x, t, s), net(x, t, s + 100.0)
    assert not torch.allclose(a, b)


def test_first_time_changes_output():
    net = _mlp(second_time=False)
    x, t, _ = _inputs((2,))
    assert not torch.allclose(net(x, t), net(x, t + 100.0))


def test_missing_second_time_raises():
    net = _mlp(second_time=True)
    x, t, _ = _inputs((2,))
    with pytest.raises(ValueError, match="second time"):
        net(x, t, None)


def test_without_second_time_branch_s_is_optional():
    net = _mlp(second_time=False)
    assert net.cond.s_embed is None
    x, t, s = _inputs((2,))
    torch.testing.assert_close(net(x, t, None), net(x, t, s), rtol=0, atol=0)


def test_class_labels():
    net = _mlp(num_classes=3)
    x, t, s = _inputs((2,))
    y0 = net(x, t, s, torch.zeros(5, dtype=torch.long))
    y1 = net(x, t, s, torch.ones(5, dtype=torch.long))
    assert not torch.allclose(y0, y1)
    null = net(x, t, s, torch.full((5,), 3, dtype=torch.long))
    torch.testing.assert_close(net(x, t, s, None), null, rtol=0, atol=0)
    assert not torch.allclose(null, y0)
    assert net.cond.label_embed.num_embeddings == 4  # three classes + null


def test_parameter_count_grows_with_width():
    def count(w):
        return sum(p.numel() for p in MLP((2,), width=w, depth=2, emb_dim=16).parameters())
    assert count(16) < count(32) < count(64)


def test_parameter_count_closed_form():
    """d = 2, emb = 16, freq = 128: two time MLPs (128*16+16 + 16*16+16 each), body (18->w, w->w, w->2)."""
    w = 8
    net = MLP((2,), width=w, depth=2, emb_dim=16, second_time=True)
    time_mlp = 128 * 16 + 16 + 16 * 16 + 16
    body = (18 * w + w) + (w * w + w) + (w * 2 + 2)
    assert sum(p.numel() for p in net.parameters()) == 2 * time_mlp + body


def test_sinusoidal_embedding():
    t = torch.tensor([0.0, 10.0, 500.0])
    e = sinusoidal(t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    # frequency k is 10000^(-k/4): the first pair is cos(t), sin(t)
    torch.testing.assert_close(e[1, 0], torch.cos(torch.tensor(10.0)))
    torch.testing.assert_close(e[1, 4], torch.sin(torch.tensor(10.0)))
    torch.testing.assert_close(e[2, 1], torch.cos(torch.tensor(500.0 * 10_000 ** -0.25)))
    assert sinusoidal(t, 7).shape == (3, 7)


def test_conditioning_sums_branches():
    torch.manual_seed(0)
    c = Conditioning(16, second_time=True, num_classes=2)
    t = torch.tensor([1.0, 2.0])
    s = torch.tensor([3.0, 4.0])
    lab = torch.tensor([0, 1])
    expected = c.t_embed(t) + c.s_embed(s) + c.label_embed(lab)
    torch.testing.assert_close(c(t, s, lab), expected)
