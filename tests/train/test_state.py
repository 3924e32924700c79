"""fewstep.train.state: TrainState round trips, missing parts, format-1 upgrade and parts without state."""
from __future__ import annotations

import io

import pytest
import torch

from fewstep.errors import CheckpointError
from fewstep.train.ema import EMA
from fewstep.train.state import FORMAT, TrainState


class Counter:
    def __init__(self, value=0):
        self.value = value
        self.loaded = []

    def state_dict(self):
        return {"value": torch.tensor(self.value)}

    def load_state_dict(self, state):
        self.loaded.append(state)
        self.value = int(state["value"]) if "value" in state else self.value


def _parts(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(torch.randn(4, 2)).sum().backward()
    opt.step()
    ema = EMA(net, 0.9)
    for _ in range(3):
        ema.update(net)
    return opt, ema, Counter(5)


def _through_file(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # how a checkpoint is read back


def test_saves_and_restores_every_part():
    opt, ema, counter = _parts()
    state = TrainState(optimizer=opt, ema=ema, objective=counter).state_dict()
    assert state["format"] == FORMAT == 2 and set(state) == {"format", "optimizer", "ema", "objective"}
    state = _through_file(state)
    opt2 = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.5)
    ema2, counter2 = EMA(torch.nn.Linear(2, 2), 0.9), Counter(0)
    TrainState(optimizer=opt2, ema=ema2, objective=counter2).load_state_dict(state)
    assert ema2.updates == 3 and counter2.value == 5
    assert opt2.param_groups[0]["lr"] == 1e-2
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert int(a[k]["step"]) == int(b[k]["step"]) == 1
        assert torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) and torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"])


def test_a_part_the_checkpoint_lacks_is_a_checkpoint_error_naming_the_file():
    opt, ema, counter = _parts()
    state = TrainState(optimizer=opt, ema=ema).state_dict()
    with pytest.raises(CheckpointError, match=r"runs/x/state.pt: holds no state for objective \(was it written"):
        TrainState(optimizer=opt, ema=ema, objective=Counter()).load_state_dict(state, "runs/x/state.pt")
    with pytest.raises(CheckpointError, match=r"^state.pt: holds no state for ema, objective"):
        TrainState(optimizer=opt, ema=ema, objective=Counter()).load_state_dict({"format": 2, "optimizer": {}})


def test_nothing_is_loaded_when_a_part_is_missing():
    counter = Counter(1)
    with pytest.raises(CheckpointError):
        TrainState(objective=counter, ema=Counter(2)).load_state_dict({"format": 2, "objective": {"value": 9}})
    assert counter.loaded == [] and counter.value == 1


def test_a_format_1_state_is_upgraded():
    opt, ema, _ = _parts()
    old = {"optimizer": opt.state_dict(), "ema_updates": 7, "step": 40}  # fewstep 0.1.0, no "format"
    before = dict(old)
    ema2, precision, objective = EMA(torch.nn.Linear(2, 2), 0.9), Counter(3), Counter(4)
    opt2 = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.5)
    TrainState(optimizer=opt2, ema=ema2, precision=precision, objective=objective).load_state_dict(old)
    assert ema2.updates == 7
    assert precision.loaded == [{}] and objective.loaded == [{}]  # stateless then: empty state, values kept
    assert (precision.value, objective.value) == (3, 4)
    assert opt2.param_groups[0]["lr"] == 1e-2
    assert old == before  # the caller's dict is not changed


def test_a_format_1_state_without_an_ema_count_starts_it_at_0():
    ema = EMA(torch.nn.Linear(2, 2), 0.9)
    ema.updates = 5
    TrainState(ema=ema).load_state_dict({"step": 1})
    assert ema.updates == 0


def test_a_part_without_state_dict_is_a_type_error():
    with pytest.raises(TypeError, match="training state part 'scheduler' has no state_dict/load_state_dict"):
        TrainState(optimizer=_parts()[0], scheduler=object())
