"""fewstep.objectives: online_and_target, RNGState, EMATarget and the deprecated fewstep.flowmap path."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.objectives import EMATarget, RNGState, online_and_target
from fewstep.testing import ProbeNet


def _probe_fm(seed=0):
    return FlowMap(ProbeNet(2, seed=seed), OTFM(0.5), "euler_fm", "s")


def _args(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.2 + 0.7 * torch.rand(n, generator=g, dtype=torch.float64)
    s = t * torch.rand(n, generator=g, dtype=torch.float64)
    r = s + (t - s) * 0.5
    x_r = x + 0.1
    return (x, s, t, None), (x_r, s, r, None)


def test_online_pass_has_gradients_and_the_target_pass_has_none():
    fm = _probe_fm()
    online, target = _args()
    y, y_tilde = online_and_target(fm, fm, online, target)
    assert y.requires_grad and y.grad_fn is not None
    assert not y_tilde.requires_grad and y_tilde.grad_fn is None
    assert [c["grad"] for c in fm.net.calls] == [True, False]
    with torch.no_grad():  # the same values as two plain calls
        torch.testing.assert_close(y, fm.f(*online), rtol=0, atol=0)
        torch.testing.assert_close(y_tilde, fm.f(*target), rtol=0, atol=0)
    y.sum().backward()
    assert all(p.grad is not None for p in fm.net.parameters())


def test_the_target_flow_map_is_the_one_given():
    fm, other = _probe_fm(seed=0), _probe_fm(seed=1)
    online, target = _args()
    _, y_tilde = online_and_target(fm, other, online, target)
    assert len(fm.net.calls) == 1 and len(other.net.calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(y_tilde, other.f(*target), rtol=0, atol=0)


def test_shared_dropout_replays_the_rng_for_the_target_pass():
    fm = _probe_fm()
    online, target = _args()
    torch.manual_seed(3)
    online_and_target(fm, fm, online, target, shared_dropout=True)
    shared = [c["draw"] for c in fm.net.calls]
    fm.net.calls.clear()
    torch.manual_seed(3)
    online_and_target(fm, fm, online, target, shared_dropout=False)
    separate = [c["draw"] for c in fm.net.calls]
    assert shared[0] == shared[1]
    assert separate[0] == shared[0] and separate[1] != separate[0]  # the second pass draws afresh


def test_shared_dropout_gives_equal_masks_to_a_dropout_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.Dropout(0.5), nn.Linear(64, 2))

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t, s=None, cond=None):
            return self.net(x)

    fm = FlowMap(Backbone(), OTFM(0.5), "euler_fm", "none")
    x = torch.randn(8, 2)
    half = torch.full((8,), 0.5)
    y, y_tilde = online_and_target(fm, fm, (x, half * 0, half, None), (x, half * 0, half, None))
    torch.testing.assert_close(y.detach(), y_tilde)  # same input, same mask: the same output
    y, y_tilde = online_and_target(fm, fm, (x, half * 0, half, None), (x, half * 0, half, None),
                                   shared_dropout=False)
    assert not torch.allclose(y.detach(), y_tilde)


class DtypeNet(nn.Module):
    """Records the dtype a linear layer computes in on each call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.dtypes = []

    def forward(self, x, t, s=None, cond=None):
        out = self.lin(x)
        self.dtypes.append(out.dtype)
        return out


@pytest.mark.parametrize(("target_fp32", "target_dtype"), [(True, torch.float32), (False, torch.bfloat16)])
def test_target_fp32_runs_the_target_outside_autocast(target_fp32, target_dtype):
    net = DtypeNet()
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s")
    x = torch.randn(4, 2)
    t, s = torch.full((4,), 0.6), torch.full((4,), 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_tilde = online_and_target(fm, fm, (x, s, t, None), (x, s, t * 0.9, None), target_fp32=target_fp32)
    assert net.dtypes == [torch.bfloat16, target_dtype]
    assert y_tilde.dtype == y.dtype  # handed back in the online pass's dtype


def test_rng_state_restore_replays_the_same_draws():
    torch.manual_seed(11)
    state = RNGState(torch.device("cpu"))
    first = torch.rand(5)
    torch.rand(7)  # move on
    state.restore()
    torch.testing.assert_close(torch.rand(5), first, rtol=0, atol=0)
    assert state.cuda is None  # a CPU device saves no CUDA state


def test_ema_target_copies_then_follows_the_weights_and_resumes():
    from fewstep.networks.mlp import MLP

    torch.manual_seed(0)
    fm = FlowMap(MLP((2,), width=8, depth=1, emb_dim=4), OTFM(0.5), "euler_fm", "s")
    ema = EMATarget(0.75)
    w0 = [p.detach().clone() for p in fm.net.parameters()]
    target = ema.flowmap(fm)
    assert target.net is not fm.net and all(torch.equal(a, b) for a, b in zip(target.net.parameters(), w0))
    assert not any(p.requires_grad for p in target.net.parameters())
    with torch.no_grad():
        for p in fm.net.parameters():
            p.add_(1.0)
    ema.flowmap(fm)  # theta- <- 0.75 theta0 + 0.25 (theta0 + 1)
    assert all(torch.allclose(a, b + 0.25) for a, b in zip(ema.net.parameters(), w0))
    resumed = EMATarget(0.75)
    resumed.load_state_dict(ema.state_dict())  # before the network exists: applied on first use
    resumed.flowmap(fm), ema.flowmap(fm)
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.parameters(), ema.net.parameters()))


def test_ema_target_state_before_use_and_train_mode():
    ema = EMATarget(0.5)
    assert ema.state_dict() == {}
    ema.load_state_dict({})  # nothing to restore: still nothing
    assert ema.state_dict() == {} and ema.net is None
    pending = {"A": torch.zeros(2, 2, dtype=torch.float64)}
    ema.load_state_dict({"target": pending})
    assert ema.state_dict() == {"target": pending}  # kept until the network exists
    fm = _probe_fm()
    fresh = EMATarget(0.5)
    fm.net.eval()
    assert not fresh.flowmap(fm).net.training
    fm.net.train()
    assert fresh.flowmap(fm).net.training  # follows the online network's mode


def test_ema_target_copies_the_plain_module_inside_a_wrapper():
    class Wrapper(nn.Module):  # a DistributedDataParallel stand-in
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args):
            return self.module(*args)

    fm = _probe_fm()
    wrapped = fm.with_net(Wrapper(fm.net))
    ema = EMATarget(0.9)
    target = ema.flowmap(wrapped)
    assert isinstance(target.net, ProbeNet)
    assert set(ema.state_dict()["target"]) == set(fm.net.state_dict())  # no "module." prefix


@pytest.mark.parametrize("name", ["EMATarget", "RNGState", "online_and_target"])
def test_the_old_flowmap_import_path_warns_and_gives_the_same_object(name):
    import fewstep.flowmap
    import fewstep.objectives

    with pytest.warns(DeprecationWarning, match=f"fewstep.flowmap.{name} moved to fewstep.objectives.{name}"):
        old = getattr(fewstep.flowmap, name)
    assert old is getattr(fewstep.objectives, name)


def test_from_fewstep_flowmap_import_ema_target_still_works():
    with pytest.warns(DeprecationWarning):
        from fewstep.flowmap import EMATarget as Old
    assert Old is EMATarget
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import fewstep.flowmap

        fewstep.flowmap.Nope  # noqa: B018


def test_ema_target_copies_buffers_and_averages_parameters():
    """Parameters follow theta- <- d theta- + (1 - d) theta; buffers (e.g. BatchNorm statistics) are copied."""

    class WithStats(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.register_buffer("stat", torch.zeros(2))

        def forward(self, x, t, s=None, cond=None):
            return x * self.w

    net = WithStats()
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s")
    ema = EMATarget(0.5)
    ema.flowmap(fm)
    with torch.no_grad():
        net.w.fill_(1.0)
        net.stat.fill_(3.0)
    ema.flowmap(fm)
    assert torch.equal(ema.net.w, torch.full((2,), 0.5)) and torch.equal(ema.net.stat, torch.full((2,), 3.0))


def test_ema_target_moves_once_per_optimiser_step_whatever_the_shards():
    """With the step, loss calls of one step (one per accumulated shard) share one EMA move: accumulating
    4 shards gives the EMA of an unaccumulated run, not decay^4."""
    from fewstep.networks.mlp import MLP

    torch.manual_seed(0)
    fm = FlowMap(MLP((2,), width=8, depth=1, emb_dim=4), OTFM(0.5), "euler_fm", "s")
    w0 = [p.detach().clone() for p in fm.net.parameters()]
    per_step, per_call = EMATarget(0.5), EMATarget(0.5)
    for ema in (per_step, per_call):
        ema.flowmap(fm, 0)
    with torch.no_grad():
        for p in fm.net.parameters():
            p.add_(1.0)
    for _ in range(4):  # four shards of step 1
        target = per_step.flowmap(fm, 1)
        per_call.flowmap(fm)
    assert target.net is per_step.net
    assert all(torch.allclose(a, b + 0.5) for a, b in zip(per_step.net.parameters(), w0))  # one move
    assert all(torch.allclose(a, b + 1 - 0.5**4) for a, b in zip(per_call.net.parameters(), w0))  # without step
    per_step.flowmap(fm, 2)
    assert all(torch.allclose(a, b + 0.75) for a, b in zip(per_step.net.parameters(), w0))
