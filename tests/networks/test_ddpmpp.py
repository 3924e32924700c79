"""The DDPM++ backbone (fewstep/networks/ddpmpp.py): the official parameter counts, its embedding, resampling,
attention and label handling against hand computations, and a tiny forward/backward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fewstep.networks import NetworkSpec
from fewstep.networks.ddpmpp import Block, Conv, DDPMpp, positional
from fewstep.testing import backbone_inputs

TINY = dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)


def tiny(num_classes=None, second_time=True, **kw):
    torch.manual_seed(0)
    return DDPMpp(NetworkSpec((3, 8, 8), num_classes, second_time), **{**TINY, **kw}).eval()


@pytest.mark.parametrize("second_time, augment_dim, count, tensors", [
    (True, 0, 56_061_443, 428),   # IMM's released CIFAR-10 model (lumalabs/imm, cifar10 config)
    (True, 9, 56_062_595, 429),   # ... with EDM's 9 augmentation labels
    (False, 0, 55_732_739, 424),  # EDM's DDPM++ (unconditional, no augmentation)
])
def test_cifar10_size_has_the_official_parameter_counts(second_time, augment_dim, count, tensors):
    """Counted from instances of the official code (NVlabs/edm SongUNet, lumalabs/imm with s_embed) built
    outside the project at 32 x 32 x 3, 128 channels, multipliers (2, 2, 2)."""
    net = DDPMpp(NetworkSpec((3, 32, 32), None, second_time), augment_dim=augment_dim)
    assert sum(p.numel() for p in net.parameters()) == count
    assert len(net.state_dict()) == tensors  # resample filters included, as in the released state dicts


def test_state_dict_names_follow_the_released_checkpoints():
    sd = DDPMpp(NetworkSpec((3, 32, 32), None, True), augment_dim=9).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["map_augment.weight"] == (128, 9) and "map_augment.bias" not in shapes
    assert shapes["map_layer0_s.weight"] == (512, 128) and shapes["map_layer1_s.weight"] == (512, 512)
    assert shapes["enc.32x32_conv.weight"] == (128, 3, 3, 3)
    assert shapes["enc.16x16_down.skip.weight"] == (256, 256, 1, 1)
    assert shapes["enc.16x16_down.conv0.resample_filter"] == (1, 1, 2, 2)
    assert shapes["enc.16x16_block0.qkv.weight"] == (768, 256, 1, 1)  # attention at 16x16 ...
    assert "enc.32x32_block0.qkv.weight" not in shapes and "enc.8x8_block0.qkv.weight" not in shapes  # ... only
    assert shapes["dec.8x8_in0.qkv.weight"] == (768, 256, 1, 1) and "dec.8x8_in1.qkv.weight" not in shapes
    assert shapes["dec.16x16_block4.qkv.weight"] == (768, 256, 1, 1) and "dec.16x16_block3.qkv.weight" not in shapes
    assert shapes["dec.32x32_block3.conv0.weight"] == (256, 512, 3, 3)  # 256 + a 256-channel skip
    assert shapes["dec.32x32_aux_conv.weight"] == (3, 256, 3, 3)


def test_positional_features_closed_form():
    """[sin(t w_k), cos(t w_k)], w_k = 10000^(-k/(n/2 - 1)): the last frequency is exactly 1/10000."""
    t = torch.tensor([0.0, 3.0, 999.0])
    got = positional(t, 8)
    w = torch.tensor([10000.0 ** (-k / 3) for k in range(4)], dtype=torch.float64)
    args = t.double()[:, None] * w
    assert torch.allclose(got.double(), torch.cat([args.sin(), args.cos()], 1), atol=1e-6)
    assert got[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_box_filter_down_and_upsampling():
    """Down: a 2 x 2 average; up: each pixel repeated into a 2 x 2 block (DDPM++'s resample filter [1, 1])."""
    x = torch.randn(2, 3, 4, 4)
    for up, expect in ((False, F.avg_pool2d(x, 2)), (True, x.repeat_interleave(2, 2).repeat_interleave(2, 3))):
        conv = Conv(3, 3, 1, up=up, down=not up)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3)[:, :, None, None])
        assert torch.allclose(conv(x), expect, atol=1e-6)


def test_attention_is_one_head_over_interleaved_qkv_channels():
    """x + proj(v softmax(q^T k / sqrt(C))) scaled by sqrt(1/2), with q, k, v the channels 0::3, 1::3, 2::3
    of the qkv conv (the released checkpoints' layout); checked on the block's residual part set to zero."""
    torch.manual_seed(1)
    block = Block(8, 8, 4, attention=True).eval()
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.bias.zero_()
        block.proj.weight.normal_()
    x, emb = torch.randn(2, 8, 3, 3), torch.randn(2, 4)
    h = x * math.sqrt(0.5)  # the residual part: conv1 outputs 0, the identity skip remains
    qkv = block.qkv(block.norm2(h)).flatten(2)
    q, k, v = qkv[:, 0::3], qkv[:, 1::3], qkv[:, 2::3]
    w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(8), dim=2)  # [n, query, key]
    a = (v @ w.transpose(1, 2)).reshape(2, 8, 3, 3)
    assert torch.allclose(block(x, emb), (block.proj(a) + h) * math.sqrt(0.5), atol=1e-5)


def test_output_starts_near_zero_and_tiny_forward_backward_works():
    net = tiny()
    x, t, s = backbone_inputs(4, (3, 8, 8))
    out = net(x, t, s)
    assert out.shape == x.shape and out.abs().max() < 1e-3  # the output conv starts at 1e-5 x Xavier
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_grouped_times_equal_per_sample_times():
    net = tiny().double()
    x, t, s = (v.double() for v in backbone_inputs(4, (3, 8, 8)))
    grouped = net(x, t[::2], s[::2])
    per_sample = net(x, t[::2].repeat_interleave(2), s[::2].repeat_interleave(2))
    assert torch.allclose(grouped, per_sample, rtol=1e-12, atol=1e-14)


def test_null_class_is_the_zero_label_vector_and_absent_augment_labels_are_zeros():
    net = tiny(num_classes=3, augment_dim=9).double()
    x, t, s = (v.double() for v in backbone_inputs(2, (3, 8, 8)))
    null = torch.tensor([3, 3])
    emb = net.embedding(t, s, null, None, 2)
    # by hand: the label map of the zero vector is its bias
    h = positional(t, 16) + net.map_label.bias
    by_hand = net.map_layer1(F.silu(net.map_layer0(h))) + net.map_layer1_s(F.silu(net.map_layer0_s(positional(s, 16))))
    assert torch.allclose(emb, F.silu(by_hand))
    assert torch.equal(net.embedding(t, s, null, torch.zeros(2, 9, dtype=torch.float64), 2), emb)
    assert not torch.allclose(net.embedding(t, s, torch.tensor([0, 1]), None, 2), emb)


def test_the_second_time_is_required_when_built_with_it_and_shapes_are_checked():
    with pytest.raises(ValueError, match="pass s"):
        tiny()(*backbone_inputs(1, (3, 8, 8))[:2])
    assert tiny(second_time=False)(*backbone_inputs(1, (3, 8, 8))[:2]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="square images"):
        DDPMpp(NetworkSpec((3, 8, 4)), **TINY)
    with pytest.raises(ValueError, match="halved"):
        DDPMpp(NetworkSpec((3, 6, 6)), **{**TINY, "channel_mult": (1, 1, 1)})
