"""FlowMap.jvp (fewstep/flowmap.py): one forward-mode pass gives f and G with their derivatives along a
tangent (dx, ds, dt). Checked against central finite differences in float64 for every built-in backbone
and parameterisation, grouped times included; gradients flow through the primal and the tangent; the
fused attention kernels, which have no forward-mode rule, are not reached; DDP is differentiated through."""
from __future__ import annotations

import pytest
import torch

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM, VPCosine
from fewstep.networks import NetworkSpec

F64 = torch.float64

# small versions of every built-in backbone (their attention layers included)
BACKBONES = {
    "mlp": ((2,), {"width": 32, "depth": 2, "emb_dim": 16}),
    "unet": ((3, 8, 8), {"channels": [8, 16], "attention": [False, True], "layers_per_block": 1, "norm_groups": 4,
                         "dropout": 0.0}),
    "dit": ((4, 8, 8), {"hidden": 32, "depth": 2, "heads": 2, "patch": 2}),
    "ddpmpp": ((3, 8, 8), {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4],
                           "dropout": 0.0, "channel_mult_emb": 2}),
}


def backbone(regs, name, second_time=True, num_classes=3):
    shape, fields = BACKBONES[name]
    entry = regs.networks.get(name)
    torch.manual_seed(0)
    net = entry.build(entry.model().model_validate({"name": name, **fields}),
                      NetworkSpec(shape, num_classes=num_classes, second_time=second_time))
    with torch.no_grad():  # zero-initialised output layers (adaLN-zero, EDM's) would make every derivative 0
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.double().eval(), shape


def central_difference(fm, x, s, t, tangent, cond, guidance=1.0, h=1e-6):
    """The fourth-order central stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h along the tangent: c_noise =
    1000 t makes the time features oscillate fast, which a second-order stencil resolves only to ~1e-4."""
    dx, ds, dt = tangent

    def at(e):
        return fm.f(x + e * dx, s + e * ds, t + e * dt, cond, guidance)

    return (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h)


def inputs(shape, n=4, seed=1, groups=None):
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(n, *shape, generator=g, dtype=F64)
    k = groups or n
    t = 0.3 + 0.6 * torch.rand(k, generator=g, dtype=F64)
    s = t * torch.rand(k, generator=g, dtype=F64)
    tangent = (torch.randn(n, *shape, generator=g, dtype=F64), torch.randn(k, generator=g, dtype=F64),
               torch.randn(k, generator=g, dtype=F64))
    return x, s, t, tangent


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("param, ip", [("euler_fm", OTFM()), ("identity", OTFM()), ("simple_edm", VPCosine()),
                                       ("identity", VPCosine())])
def test_the_jvp_equals_central_differences(regs, name, param, ip):
    net, shape = backbone(regs, name)
    fm = FlowMap(net, ip, param, second_time="stride", time_scale=1000.0, num_classes=3)
    x, s, t, tangent = inputs(shape)
    cond = torch.tensor([0, 1, 2, 3])  # 3: the null class
    out = fm.jvp(x, s, t, tangent, cond)
    assert torch.allclose(out.f, fm.f(x, s, t, cond), rtol=1e-12, atol=1e-12)
    assert torch.allclose(out.G, fm.G(x, s, t, cond), rtol=1e-12, atol=1e-12)
    fd = central_difference(fm, x, s, t, tangent, cond)
    assert out.df.abs().max() > 1e-3  # a derivative that is there to compare
    assert torch.allclose(out.df, fd, rtol=1e-6, atol=1e-8 * fd.abs().max().item()), (out.df - fd).abs().max()


@pytest.mark.parametrize("name", ["mlp", "dit", "ddpmpp"])
def test_grouped_times_and_a_per_group_tangent(regs, name):
    """IMM-style groups: two groups of two samples sharing their (s, t) and their time tangent."""
    net, shape = backbone(regs, name)
    fm = FlowMap(net, OTFM(), "euler_fm", second_time="s", time_scale=1000.0, num_classes=3)
    assert fm.grouped
    x, s, t, tangent = inputs(shape, groups=2)
    out = fm.jvp(x, s, t, tangent)
    assert torch.allclose(out.df, central_difference(fm, x, s, t, tangent, None), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("tangent", [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_each_direction_alone_and_numbers_as_tangents(regs, tangent):
    """Numbers broadcast: (0, 0, 1) is d/dt at fixed x and s (TVM's (0, 1, 0) is d/ds)."""
    net, shape = backbone(regs, "mlp")
    fm = FlowMap(net, OTFM(), "euler_fm", second_time="stride", time_scale=1.0)
    x, s, t, _ = inputs(shape)
    dx = torch.ones_like(x) if tangent[0] else 0
    out = fm.jvp(x, s, t, (dx, *tangent[1:]))
    full = (torch.ones_like(x) if tangent[0] else torch.zeros_like(x), torch.full_like(s, float(tangent[1])),
            torch.full_like(t, float(tangent[2])))
    assert torch.allclose(out.df, central_difference(fm, x, s, t, full, None), rtol=1e-6, atol=1e-9)


def test_the_euler_fm_identity_of_the_jvp(regs):
    """docs/objectives.md §0: JVP_f = dx - (dt - ds) sigma_d G - (t - s) sigma_d JVP_G under Euler-FM."""
    net, shape = backbone(regs, "mlp")
    ip = OTFM(sigma_d=0.7)
    fm = FlowMap(net, ip, "euler_fm", second_time="stride", time_scale=1.0)
    x, s, t, (dx, ds, dt) = inputs(shape)
    out = fm.jvp(x, s, t, (dx, ds, dt))
    expect = dx - ((dt - ds) * ip.sigma_d)[:, None] * out.G - ((t - s) * ip.sigma_d)[:, None] * out.dG
    assert torch.allclose(out.df, expect, rtol=1e-12, atol=1e-12)


def test_gradients_flow_through_the_primal_and_the_tangent(regs):
    """Reverse over forward (TVM back-propagates through d f / d s): the gradient of a loss on df equals
    the one through finite differences of the parameters; under no_grad nothing is recorded."""
    net, shape = backbone(regs, "mlp")
    fm = FlowMap(net, OTFM(), "euler_fm", second_time="stride", time_scale=1.0)
    x, s, t, tangent = inputs(shape)

    def loss():
        out = fm.jvp(x, s, t, tangent)
        return out.f.pow(2).sum() + out.df.pow(2).sum()

    loss().backward()
    p = next(net.parameters())
    direction = torch.randn_like(p)
    analytic = (p.grad * direction).sum()
    with torch.no_grad():
        p.add_(1e-6 * direction)
        up = loss()
        p.sub_(2e-6 * direction)
        down = loss()
        p.add_(1e-6 * direction)
        assert not fm.jvp(x, s, t, tangent).df.requires_grad
    assert torch.allclose(analytic, (up - down) / 2e-6, rtol=1e-6)


def test_guidance_is_differentiated_as_guided_G(regs):
    net, shape = backbone(regs, "dit")
    fm = FlowMap(net, OTFM(), "euler_fm", second_time="stride", time_scale=1000.0, num_classes=3)
    x, s, t, tangent = inputs(shape)
    cond = torch.tensor([0, 1, 2, 0])
    out = fm.jvp(x, s, t, tangent, cond, guidance=1.5)
    assert torch.allclose(out.df, central_difference(fm, x, s, t, tangent, cond, 1.5), rtol=1e-6, atol=1e-9)


def test_fused_attention_is_not_reached_inside_the_jvp_only(regs):
    """The DiT's attention runs on the math kernel inside the JVP: a fused kernel has no forward-mode rule
    (on CPU, SDPA's flash kernel under forward AD raises), and the jvp is unaffected by a caller that
    asks for one outside."""
    import torch.autograd.forward_ad as fwAD
    from torch.nn.attention import SDPBackend, sdpa_kernel

    net, shape = backbone(regs, "dit")
    fm = FlowMap(net.float(), OTFM(), "euler_fm", second_time="stride", time_scale=1000.0, num_classes=3)
    x, s, t, _ = (v.float() if torch.is_tensor(v) else v for v in inputs(shape))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        with pytest.raises(NotImplementedError, match="forward AD"):  # what the fallback avoids
            with fwAD.dual_level():
                fm.G(fwAD.make_dual(x, torch.ones_like(x)), s, t)
        out = fm.jvp(x, s, t, (torch.ones_like(x), 0, 1))
    assert torch.isfinite(out.df).all() and out.df.abs().max() > 0


def test_a_ddp_backbone_is_differentiated_and_its_gradient_synchronised(regs, tmp_path):
    """torch.func.jvp cannot take a DDP module; forward-mode AD goes through its forward, and its
    gradient hooks (the all-reduce) run on the backward (one gloo process)."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29000 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        net, shape = backbone(regs, "mlp")
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        fm, bare = (FlowMap(n, OTFM(), "euler_fm", second_time="stride", time_scale=1.0) for n in (ddp, net))
        x, s, t, tangent = inputs(shape)
        out = fm.jvp(x, s, t, tangent)
        assert torch.allclose(out.df, bare.jvp(x, s, t, tangent).df, rtol=1e-12)
        out.df.pow(2).sum().backward()
        assert all(p.grad is not None for p in net.parameters())
    finally:
        dist.destroy_process_group()


class _Root(torch.nn.Module):
    def forward(self, h):
        return h.abs().sqrt()  # d sqrt(|h|)/dh is infinite at h = 0: a finite value with a NaN tangent


class _Backbone(torch.nn.Module):
    """Linear -> sqrt|.| -> Linear, the first layer zeroed so the root sees exactly 0."""

    def __init__(self):
        super().__init__()
        self.inp, self.root, self.out = torch.nn.Linear(4, 8), _Root(), torch.nn.Linear(8, 2)
        torch.nn.init.zeros_(self.inp.weight)
        torch.nn.init.zeros_(self.inp.bias)

    def forward(self, x, t, s=None, cond=None):
        return self.out(self.root(self.inp(torch.cat([x, t[:, None], s[:, None]], dim=1))))


def test_a_non_finite_tangent_names_the_layer_where_it_appears():
    from fewstep.errors import NonFiniteTangent, TrainingDiverged

    fm = FlowMap(_Backbone(), OTFM(), "euler_fm", second_time="stride", time_scale=1.0)
    x, s, t = torch.randn(3, 2), torch.full((3,), 0.2), torch.full((3,), 0.7)
    assert torch.isfinite(fm.f(x, s, t)).all()  # the values are fine
    with pytest.raises(NonFiniteTangent) as info:
        fm.jvp(x, s, t, (torch.ones_like(x), 0, 1))
    assert isinstance(info.value, TrainingDiverged)
    assert str(info.value) == "the flow map's JVP tangent is not finite: it first appears in root (_Root)"


@pytest.mark.parametrize("name", ["unet", "dit", "ddpmpp"])
def test_gradients_flow_through_the_tangent_of_every_attention_backbone(regs, name):
    """TVM back-propagates through d f / d s: the attention inside the JVP must allow it (torch's softmax rule
    does not), and the gradient along a parameter direction equals differences of the loss."""
    net, shape = backbone(regs, name)
    fm = FlowMap(net, OTFM(), "euler_fm", second_time="stride", time_scale=1000.0, num_classes=3)
    x, s, t, _ = inputs(shape)

    def loss():
        return fm.jvp(x, s, t, (0, 1, 0)).df.pow(2).sum()

    loss().backward()
    params = [p for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert params and all(torch.isfinite(p.grad).all() for p in params)
    p = max(params, key=lambda q: q.numel())
    direction = torch.randn_like(p)
    with torch.no_grad():
        p.add_(1e-6 * direction)
        up = loss()
        p.sub_(2e-6 * direction)
        down = loss()
        p.add_(1e-6 * direction)
    assert torch.allclose((p.grad * direction).sum(), (up - down) / 2e-6, rtol=1e-5)
