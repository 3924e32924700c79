"""The diffusers UNet backbone: shapes, the second time s, class labels, and errors."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.networks import NetworkSpec
from fewstep.networks.unet import UNet
from fewstep.testing import backbone_inputs

TINY = dict(channels=(8, 16), attention=(False, True), layers_per_block=1, dropout=0.0, norm_groups=4, head_dim=4)


def _net(num_classes=None, second_time=True, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return UNet(NetworkSpec(shape, num_classes, second_time), **TINY).eval()


def _inputs(n=4, shape=(1, 8, 8)):
    return backbone_inputs(n, shape)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_output_keeps_the_shape_and_s_changes_it(shape):
    net = _net(shape=shape)
    x, t, s = _inputs(shape=shape)
    with torch.no_grad():
        out = net(x, t, s)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(net(x, t, s * 0.5), out)


def test_float_times_are_not_truncated():
    net = _net()
    x, t, s = _inputs()
    with torch.no_grad():  # 500.3 and 500.7 would both be 500 if the times were cast to integers
        assert not torch.equal(net(x, torch.full((4,), 500.3), s), net(x, torch.full((4,), 500.7), s))


def test_labels_with_and_without_a_second_time():
    for second_time in (True, False):
        net = _net(num_classes=3, second_time=second_time)
        x, t, s = _inputs()
        s = s if second_time else None
        with torch.no_grad():
            a = net(x, t, s, torch.tensor([0, 0, 0, 0]))
            b = net(x, t, s, torch.tensor([1, 1, 1, 1]))
            null = net(x, t, s, None)  # no labels: the null class (index 3)
            assert not torch.allclose(a, b) and torch.allclose(null, net(x, t, s, torch.full((4,), 3)))


def test_flow_map_around_the_unet_samples_images(regs):
    from fewstep.flowmap import FlowMap
    from fewstep.interpolants import OTFM
    from fewstep.samplers import Pushforward, generate

    fm = FlowMap(_net(num_classes=3), OTFM(0.5), "euler_fm", "s", num_classes=3)
    x, nfe = generate(fm, Pushforward(guidance=2.0), 2, 6, (1, 8, 8), cond=torch.arange(6) % 3,
                      generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, 8, 8) and nfe == 4  # 2 steps x (conditional + unconditional)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="square images"):
        UNet(NetworkSpec((2,)), **TINY)
    with pytest.raises(ValueError, match="cannot be halved"):
        UNet(NetworkSpec((1, 6, 6)), **{**TINY, "channels": (8, 16, 16), "attention": (False,) * 3})


def test_recipe_errors_for_the_unet_config(regs):
    model = regs.networks.get("unet").model()
    with pytest.raises(Exception, match="one flag per level"):
        model.model_validate({"name": "unet", "channels": [8, 16], "attention": [True]})
    with pytest.raises(Exception, match="must divide every channel count"):
        model.model_validate({"name": "unet", "channels": [12, 16], "attention": [False, False], "norm_groups": 8})



@pytest.mark.parametrize("channels", [32, 33])
def test_the_time_projection_is_diffusers_in_float64(channels):
    """fewstep's projection is diffusers' Timesteps (flip_sin_to_cos, shift 0) to float32 rounding, in float64
    when the network is (the JVP tests' finite differences need it), in the network's dtype otherwise."""
    from diffusers.models.embeddings import Timesteps

    from fewstep.networks.unet import _Timesteps

    t = torch.tensor([0.0, 3.7, 250.0, 999.0])
    ours = _Timesteps(channels)
    assert torch.allclose(ours(t), Timesteps(channels, True, 0)(t), atol=2e-4)
    exact = torch.tensor(999.0, dtype=torch.float64) * torch.exp(-math.log(1e4) * torch.arange(
        channels // 2, dtype=torch.float64) / (channels // 2))
    last_sin = _Timesteps(channels).double()(t.double())[3, 2 * (channels // 2) - 1].item()
    assert last_sin == pytest.approx(math.sin(exact[-1].item()), abs=1e-12)
    assert ours(t).dtype == torch.float32

