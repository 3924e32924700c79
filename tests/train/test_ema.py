"""fewstep.train.ema: the warm-up decay, the update against a hand computation, buffers, and the state round trip."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.train.ema import EMA


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def _set(net, value):
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


@pytest.mark.parametrize("decay", [0.999, 0.5, 0.05])
def test_warm_up_decay_is_min_decay_and_1_plus_n_over_10_plus_n(decay):
    ema = EMA(_net(), decay)
    net = _net()
    for n in range(30):
        assert ema.current_decay() == pytest.approx(min(decay, (1 + n) / (10 + n)), rel=1e-15)
        ema.update(net)
    assert ema.updates == 30


def test_the_copy_is_independent_frozen_and_in_eval_mode():
    net = _net()
    ema = EMA(net, 0.9)
    assert ema.net is not net and not ema.net.training
    assert not any(p.requires_grad for p in ema.net.parameters())
    _set(net, 7.0)  # changing the source without update() leaves the EMA alone
    assert not any(bool((p == 7.0).all()) for p in ema.net.parameters())
    assert net.training  # the source keeps its mode


def test_update_against_a_hand_computation():
    net = _net()
    _set(net, 1.0)
    ema = EMA(net, 0.999)  # theta_ema = 1
    _set(net, 3.0)
    ema.update(net)  # d = min(0.999, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3 = 2.8
    for p in ema.net.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 2.8))
    _set(net, -1.0)
    ema.update(net)  # d = 2/11: (2/11) 2.8 + (9/11)(-1)
    for p in ema.net.parameters():
        torch.testing.assert_close(p, torch.full_like(p, (2 / 11) * 2.8 - 9 / 11))


def test_a_long_run_uses_the_configured_decay():
    net = _net()
    _set(net, 0.0)
    ema = EMA(net, 0.5)
    ema.load_state_dict({"updates": 1000})  # (1 + n) / (10 + n) is near 1 by now: decay 0.5 rules
    _set(net, 4.0)
    ema.update(net)
    for p in ema.net.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 2.0))


def test_buffers_are_copied_not_averaged():
    net = _net()
    ema = EMA(net, 0.9)
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)
        net[1].num_batches_tracked.fill_(12)
    ema.update(net)
    assert torch.equal(ema.net[1].running_mean, torch.full((3,), 5.0))
    assert int(ema.net[1].num_batches_tracked) == 12


def test_update_from_another_module_uses_that_modules_weights():
    a, b = _net(0), _net(1)
    _set(a, 0.0)
    _set(b, 10.0)
    ema = EMA(a, 0.999)
    ema.update(a)
    ema.update(b)  # a different source object (e.g. after a rebuild): its weights, not a's cached ones
    for p in ema.net.parameters():
        torch.testing.assert_close(p, torch.full_like(p, (2 / 11) * 0.0 + (9 / 11) * 10.0))


def test_state_dict_round_trip_continues_the_warm_up():
    net = _net()
    ema = EMA(net, 0.99)
    for _ in range(4):
        ema.update(net)
    state = ema.state_dict()
    assert state == {"updates": 4}
    resumed = EMA(net, 0.99)
    resumed.load_state_dict(state)
    assert resumed.updates == 4 and resumed.current_decay() == pytest.approx(5 / 14)
    resumed.load_state_dict({"updates": torch.tensor(9)})  # as read back from a checkpoint
    assert resumed.updates == 9 and isinstance(resumed.updates, int)
