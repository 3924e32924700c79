"""The DiT backbone: shapes, adaLN-Zero's zero output at initialisation, s and labels, grouped
times, the paper's parameter counts, and a few IMM training steps on digits."""
from __future__ import annotations

import pytest
import torch

from fewstep.networks import DIT_SIZES, NetworkSpec
from fewstep.networks.dit import DiT
from fewstep.testing import backbone_inputs

TINY = dict(hidden=32, depth=2, heads=4, patch=2)


def _net(num_classes=None, second_time=True, shape=(4, 8, 8), perturb=True):
    """A tiny DiT; ``perturb`` moves the zero-initialised layers off zero so that inputs matter."""
    torch.manual_seed(0)
    net = DiT(NetworkSpec(shape, num_classes, second_time), **TINY).eval()
    if perturb:
        with torch.no_grad():
            for layer in [b.ada[1] for b in net.blocks] + [net.final.ada[1], net.final.linear]:
                layer.weight.normal_(std=0.1)
                layer.bias.normal_(std=0.1)
    return net


def _inputs(n=4, shape=(4, 8, 8)):
    return backbone_inputs(n, shape)


@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 16, 16)])
def test_output_keeps_the_shape_and_is_zero_at_initialisation(shape):
    x, t, s = _inputs(shape=shape)
    with torch.no_grad():
        out = _net(shape=shape, perturb=False)(x, t, s)
        assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # adaLN-Zero
        out = _net(shape=shape)(x, t, s)
        assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().min() > 0


def test_s_changes_the_output_and_the_second_time_can_be_left_out():
    net = _net()
    x, t, s = _inputs()
    with torch.no_grad():
        assert not torch.allclose(net(x, t, s * 0.5), net(x, t, s))
        with pytest.raises(ValueError, match="pass s"):
            net(x, t, None)
        assert _net(second_time=False)(x, t).shape == x.shape


def test_labels_change_the_output_and_none_is_the_null_class():
    net = _net(num_classes=3)
    x, t, s = _inputs()
    with torch.no_grad():
        a, b = net(x, t, s, torch.zeros(4, dtype=torch.long)), net(x, t, s, torch.ones(4, dtype=torch.long))
        assert not torch.allclose(a, b)
        assert torch.equal(net(x, t, s, None), net(x, t, s, torch.full((4,), 3)))


def test_grouped_times_equal_the_same_times_repeated():
    net = _net(num_classes=3)
    x, t, s = _inputs()
    cond = torch.tensor([0, 1, 2, 3])
    assert DiT.grouped_times
    with torch.no_grad():
        grouped = net(x, t[::2], s[::2], cond)
        per_sample = net(x, t[::2].repeat_interleave(2), s[::2].repeat_interleave(2), cond)
        assert torch.allclose(grouped, per_sample, rtol=1e-5, atol=1e-6)
        one = net(x, t[:1], s[:1], cond)  # one time for the whole batch
        assert torch.allclose(one, net(x, t[:1].expand(4), s[:1].expand(4), cond), rtol=1e-5, atol=1e-6)


def test_patches_map_back_to_their_pixels():
    net = _net(shape=(3, 16, 16))
    with torch.no_grad():  # token i of a zero image with a one-pixel change moves only patch i's pixels
        x, t, s = torch.zeros(1, 3, 16, 16), torch.full((1,), 500.0), torch.full((1,), 250.0)
        tokens = net.final(net.patchify(x), net.cond(t, s, None, 1)) * 0
        tokens[0, 9] = 1.0  # token 9 = row 1, column 1 of the 8x8 grid
        img = net.unpatchify(tokens)
        assert img[0, :, 2:4, 2:4].eq(1).all() and img.sum() == 3 * 4


@pytest.mark.parametrize("size, paper", [("S", 33e6), ("B", 130e6), ("L", 458e6), ("XL", 675e6)])
def test_parameter_counts_match_the_paper(size, paper):
    # DiT Table 1, at patch 2 on 32x32x4 ImageNet latents with 1000 classes and no second time
    # (meta tensors: nothing is allocated)
    with torch.device("meta"):
        net = DiT(NetworkSpec((4, 32, 32), 1000, second_time=False), *DIT_SIZES[size])
    n = sum(p.numel() for p in net.parameters())
    assert abs(n / paper - 1) < 0.02, f"DiT-{size}/2 has {n / 1e6:.1f}M parameters, the paper {paper / 1e6:.0f}M"


@pytest.mark.parametrize("size, count", [("S", 33_203_728), ("B", 131_288_080), ("L", 459_399_184),
                                         ("XL", 676_735_504)])
def test_parameter_counts_equal_the_released_imm_dits(size, count):
    """Counted from the official code (lumalabs/imm training/dit.py, s_embed=True) built outside the project at
    patch 2 on 32x32x4 with 1000 classes: the separate s embedder and the frozen position embedding count."""
    with torch.device("meta"):
        net = DiT(NetworkSpec((4, 32, 32), 1000, second_time=True), *DIT_SIZES[size])
    assert sum(p.numel() for p in net.parameters()) == count
    assert not net.pos_embed.requires_grad and "pos_embed" in net.state_dict()


def test_position_embedding_puts_the_column_first_as_the_reference_code():
    """MAE / DiT: channels [0, d/2) encode the column (w) of a token, [d/2, d) its row, each as
    [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k/(d/4))."""
    from fewstep.networks.dit import sincos_2d

    d, grid = 8, 3
    emb = sincos_2d(d, grid).double()
    w = torch.tensor([10000.0 ** (-k / 2) for k in range(2)], dtype=torch.float64)
    for token in range(grid * grid):
        row, col = divmod(token, grid)
        expect = torch.cat([torch.sin(col * w), torch.cos(col * w), torch.sin(row * w), torch.cos(row * w)])
        assert torch.allclose(emb[token], expect, atol=1e-6), token


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="square images"):
        DiT(NetworkSpec((2,)), **TINY)
    with pytest.raises(ValueError, match="patches"):
        DiT(NetworkSpec((1, 9, 9)), **TINY)
    with pytest.raises(ValueError, match="divisible by network.heads"):
        DiT(NetworkSpec((1, 8, 8)), **{**TINY, "heads": 5})


def test_recipe_sizes_and_overrides(regs):
    from fewstep.networks.dit import dit_dims

    model = regs.networks.get("dit").model()
    assert dit_dims(model.model_validate({"name": "dit"})) == DIT_SIZES["B"]
    assert dit_dims(model.model_validate({"name": "dit", "size": "S", "depth": 2})) == (384, 2, 6)
    with pytest.raises(ValueError, match="size is null: give hidden, depth and heads"):
        model.model_validate({"name": "dit", "size": None, "hidden": 32})  # the recipe refuses it
    with pytest.raises(ValueError, match="must be divisible by heads"):
        model.model_validate({"name": "dit", "size": "S", "heads": 5})

