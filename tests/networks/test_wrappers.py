"""fewstep.networks.wrappers: the plain module inside torch.compile's and DistributedDataParallel's wrappers."""
from __future__ import annotations

import torch
from torch import nn

from fewstep.networks.wrappers import unwrap, unwrap_ddp


class FakeDDP(nn.Module):
    """What unwrap relies on in DistributedDataParallel: the wrapped net as ``module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


def test_a_plain_module_is_its_own_plain_module():
    net = nn.Linear(2, 2)
    assert unwrap(net) is net and unwrap_ddp(net) is net


def test_unwrap_through_torch_compile():
    net = nn.Linear(2, 2)
    compiled = torch.compile(net)  # not called: no compilation happens
    assert compiled is not net
    assert unwrap(compiled) is net


def test_unwrap_through_ddp_and_through_both():
    net = nn.Linear(2, 2)
    ddp = FakeDDP(net)
    assert unwrap(ddp) is net
    assert unwrap(torch.compile(ddp)) is net
    assert unwrap(FakeDDP(FakeDDP(net))) is net


def test_unwrap_ddp_finds_the_ddp_wrapper_inside_compile():
    net = nn.Linear(2, 2)
    ddp = FakeDDP(net)
    assert unwrap_ddp(torch.compile(ddp)) is ddp  # what no_sync() is called on
    assert unwrap_ddp(ddp) is ddp


def test_a_module_attribute_that_is_not_a_module_is_not_a_wrapper():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = "just a name"

    odd = Odd()
    assert unwrap(odd) is odd
