"""fewstep.testing.doubles: ProbeNet, RecordingFlowMap (per-sample times), rng_draws, backbone_inputs."""
from __future__ import annotations

import torch

from fewstep.data.base import Batch
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.objectives import online_and_target
from fewstep.testing import ProbeNet, RecordingFlowMap, backbone_inputs, rng_draws


def test_probe_net_is_its_closed_form_in_float64():
    net = ProbeNet(3, seed=4)
    x = torch.randn(5, 3, dtype=torch.float64)
    t, s = torch.rand(5, dtype=torch.float64) * 1000, torch.rand(5, dtype=torch.float64) * 100
    out = net(x, t, s)
    A, b, c = net.A.detach(), net.b.detach(), net.c.detach()
    for i in range(5):
        want = torch.tanh(A @ x[i] + t[i] / 1000 * b + s[i] / 1000 * c)
        torch.testing.assert_close(out[i], want)
    assert out.dtype == torch.float64
    no_s = net(x, t, None)
    torch.testing.assert_close(no_s, torch.tanh(x @ A.T + t[:, None] * b / 1000))


def test_probe_net_is_seeded():
    a, b, c = ProbeNet(2, seed=0), ProbeNet(2, seed=0), ProbeNet(2, seed=1)
    assert torch.equal(a.A, b.A) and torch.equal(a.c, b.c)
    assert not torch.equal(a.A, c.A)


def test_probe_net_adds_a_label_embedding():
    net = ProbeNet(2, num_classes=3)
    x, t = torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    cond = torch.tensor([1, 3])  # 3: the null class
    torch.testing.assert_close(net(x, t, None, cond), net.emb.weight[cond].detach())
    assert net.emb.num_embeddings == 4


def test_probe_net_records_grad_mode_labels_and_one_rng_draw_per_call():
    net = ProbeNet(2)
    x, t = torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    torch.manual_seed(7)
    expected = torch.rand(()).item()
    torch.manual_seed(7)
    net(x, t)
    with torch.no_grad():
        net(x, t, cond=torch.tensor([1, 0]))
    assert [c["grad"] for c in net.calls] == [True, False]
    assert net.calls[0]["draw"] == expected and net.calls[1]["draw"] != expected
    assert net.calls[0]["cond"] is None and net.calls[1]["cond"].tolist() == [1, 0]


def _recording():
    return RecordingFlowMap(ProbeNet(2), OTFM(0.5), "euler_fm", "s")


def test_recording_flow_map_records_inputs_outputs_and_per_sample_times():
    fm = _recording()
    x = torch.randn(4, 2, dtype=torch.float64)
    s, t = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), torch.full((4,), 0.9, dtype=torch.float64)
    out = fm.f(x, s, t)
    (call,) = fm.f_calls
    assert call["x_t"] is x and call["out"] is out
    torch.testing.assert_close(call["s"], s)
    torch.testing.assert_close(call["t"], t)
    plain = FlowMap(fm.net, fm.interpolant, "euler_fm", "s")
    torch.testing.assert_close(out, plain.f(x, s, t))  # recording changes nothing


def test_recording_flow_map_expands_grouped_and_scalar_times():
    fm = _recording()
    x = torch.randn(6, 2, dtype=torch.float64)
    s, t = torch.tensor([0.1, 0.3], dtype=torch.float64), torch.tensor([0.5, 0.8], dtype=torch.float64)  # 2 groups of 3
    fm.f(x, s, t)
    fm.f(x, 0.2, 0.7)  # one time for the batch
    grouped, scalar = fm.f_calls
    assert grouped["s"].tolist() == [0.1] * 3 + [0.3] * 3 and grouped["t"].tolist() == [0.5] * 3 + [0.8] * 3
    assert scalar["s"].tolist() == [0.2] * 6 and scalar["t"].tolist() == [0.7] * 6


def test_recording_flow_map_records_the_target_pass_too():
    fm = _recording()
    assert fm.with_net(ProbeNet(2, seed=9)) is fm
    x = torch.randn(4, 2, dtype=torch.float64)
    half = torch.full((4,), 0.5, dtype=torch.float64)
    online_and_target(fm, fm.with_net(None), (x, half * 0.2, half, None), (x, half * 0.2, half * 0.9, None))
    assert len(fm.f_calls) == 2 and fm.f_calls[1]["t"].tolist() == [0.45] * 4


class _TwoPasses:
    """An objective stand-in: two backbone calls, the second after replaying the RNG or not."""

    def __init__(self, shared):
        self.shared = shared

    def loss(self, fm, batch, step):
        x = batch.x
        half = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
        y, y_tilde = online_and_target(fm, fm, (x, half * 0, half, None), (x, half * 0, half * 0.8, None),
                                       shared_dropout=self.shared)
        return (y - y_tilde).pow(2).mean(), {}


def test_rng_draws_shows_whether_the_passes_share_their_draws():
    batch = Batch(torch.randn(4, 2, dtype=torch.float64))
    shared = rng_draws(_TwoPasses(True), OTFM(0.5), batch)
    separate = rng_draws(_TwoPasses(False), OTFM(0.5), batch)
    assert len(shared) == len(separate) == 2
    assert shared[0] == shared[1] and separate[0] != separate[1]


def test_backbone_inputs():
    x, t, s = backbone_inputs(8, (3, 4, 4), seed=2)
    assert x.shape == (8, 3, 4, 4) and t.shape == s.shape == (8,)
    assert bool(((t >= 0) & (t < 1000)).all()) and bool(((s >= 0) & (s <= t)).all())
    again = backbone_inputs(8, (3, 4, 4), seed=2)
    assert all(torch.equal(a, b) for a, b in zip((x, t, s), again))
    other = backbone_inputs(8, (3, 4, 4), seed=3)
    assert not torch.equal(t, other[1])
    assert backbone_inputs()[0].shape == (4, 2)
