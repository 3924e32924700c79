"""fewstep.run.dist: one process (world 1 identities), each torchrun process's GPU, the weights checksum."""
from __future__ import annotations

import pytest
import torch

from fewstep.run.dist import Dist, from_env, weights_checksum


def test_each_process_takes_its_local_gpu_when_cuda_is_there(monkeypatch):
    from fewstep.run.dist import Dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rank3 = Dist(rank=3, world=4, local_rank=3)
    assert [rank3.device(d) for d in (None, "auto", "cuda", "cpu", "cuda:0")] == \
        ["cuda:3", "cuda:3", "cuda:3", "cpu", "cuda:0"]
    assert Dist().device("auto") == "auto"  # one process: the recipe's own choice


def test_without_cuda_every_process_keeps_the_requested_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [Dist(rank=1, world=2, local_rank=1).device(d) for d in (None, "auto", "cpu")] == [None, "auto", "cpu"]


def test_one_process_is_rank_0_of_1():
    d = Dist()
    assert (d.rank, d.world, d.local_rank, d.initialised_here) == (0, 1, 0, False)
    assert d.main and not Dist(rank=1, world=2).main


def test_world_1_collectives_are_identities():
    assert not torch.distributed.is_initialized()  # nothing to talk to: the shortcuts must not need a group
    d = Dist()
    obj = {"run": "runs/x/1"}
    assert d.broadcast(obj) is obj
    t = torch.tensor([1.5, 2.5])
    assert d.mean(t) is t
    assert d.gather(0.25, "cpu") == [0.25]
    rows = torch.arange(6.0).view(3, 2)
    assert d.gather_rows(rows, "cpu") is rows
    d.barrier()
    d.shutdown()


@pytest.mark.parametrize("env", [{}, {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}])
def test_from_env_without_torchrun_is_one_process(monkeypatch, env):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    d = from_env()
    assert d == Dist() and not torch.distributed.is_initialized()


def test_weights_checksum_is_the_float64_sum_of_the_parameters():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net[1].running_mean.fill_(100.0)  # buffers are not parameters: not summed
    want = sum(float(p.detach().double().sum()) for p in net.parameters())
    assert weights_checksum(net) == pytest.approx(want, rel=1e-15, abs=1e-12)
    with torch.no_grad():
        net[0].bias[0] += 0.5
    assert weights_checksum(net) == pytest.approx(want + 0.5, rel=1e-12)
