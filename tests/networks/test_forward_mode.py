"""fewstep/networks/forward_mode.py: inside a JVP, a layer whose weight has no tangent costs one product for
its tangent (dx W^T), not two; values, tangents and reverse-over-forward gradients equal torch's own rule."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fewstep.networks.forward_mode import conv1d, conv2d, linear, one_product_layers

F64 = torch.float64
PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.convolution.default}


class CountProducts(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func in PRODUCTS
        return func(*args, **(kwargs or {}))


def _layers():
    g = torch.Generator().manual_seed(0)
    return [
        (torch.nn.Linear(5, 4).double(), torch.randn(3, 5, generator=g, dtype=F64)),
        (torch.nn.Conv1d(2, 3, 3, padding=1).double(), torch.randn(2, 2, 7, generator=g, dtype=F64)),
        (torch.nn.Conv2d(2, 3, 3, stride=2, padding=1).double(), torch.randn(2, 2, 6, 6, generator=g, dtype=F64)),
        (torch.nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False).double(),
         torch.randn(1, 4, 5, 5, generator=g, dtype=F64)),
    ]


def _run(layer, x, dx, ours: bool):
    """(primal, tangent, d/dW ||tangent * sin(primal)||^2, products counted) through ``layer``."""
    layer.zero_grad()
    counter = CountProducts()
    with fwAD.dual_level():
        ctx = one_product_layers() if ours else contextlib.nullcontext()
        with ctx, counter:
            out = layer(fwAD.make_dual(x, dx))
        primal, tangent = fwAD.unpack_dual(out)
    (tangent * primal.sin()).pow(2).sum().backward()
    return primal.detach(), tangent.detach(), layer.weight.grad.clone(), counter.n


@pytest.mark.parametrize("i", range(4))
def test_equal_to_torch_rule_with_one_product_fewer(i):
    layer, x = _layers()[i]
    dx = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    p0, t0, g0, n0 = _run(layer, x, dx, ours=False)
    p1, t1, g1, n1 = _run(layer, x, dx, ours=True)
    assert torch.allclose(p0, p1, rtol=1e-13, atol=1e-14) and torch.allclose(t0, t1, rtol=1e-13, atol=1e-14)
    assert torch.allclose(g0, g1, rtol=1e-12, atol=1e-13)  # the gradient through the tangent (TVM's loss)
    assert (n0, n1) == (3, 2)  # torch: primal, dx W^T and x 0^T; here: primal and dx W^T


def test_the_tangent_is_the_derivative():
    """Against central differences, independent of either forward-mode rule."""
    layer, x = _layers()[2]
    dx = torch.randn(x.shape, dtype=F64)
    _, tangent, _, _ = _run(layer, x, dx, ours=True)
    h = 1e-6
    with torch.no_grad():
        fd = (layer(x + h * dx) - layer(x - h * dx)) / (2 * h)
    assert torch.allclose(tangent, fd, atol=1e-8)


def test_torch_rule_where_a_weight_has_a_tangent_and_torch_functions_outside_the_block():
    w, dw = torch.randn(4, 5, dtype=F64), torch.randn(4, 5, dtype=F64)
    x, dx = torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64)
    with fwAD.dual_level():
        out = linear(fwAD.make_dual(x, dx), fwAD.make_dual(w, dw))
        tangent = fwAD.unpack_dual(out).tangent
    assert torch.allclose(tangent, dx @ w.T + x @ dw.T, atol=1e-14)  # product rule: both terms
    assert torch.equal(linear(x, w), F.linear(x, w))  # no tangent at all: torch's call
    torch_linear, torch_conv2d = F.linear, F.conv2d
    with one_product_layers():
        assert F.linear is linear and F.conv2d is conv2d and F.conv1d is conv1d
    assert F.linear is torch_linear and F.conv2d is torch_conv2d
    with pytest.raises(ValueError):
        with one_product_layers():
            raise ValueError
    assert F.linear is torch_linear
