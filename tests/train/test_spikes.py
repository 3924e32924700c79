"""SpikeWatch (fewstep/train/spikes.py): a loss far above its running mean is reported with its step."""
from __future__ import annotations

import pytest

from fewstep.train.spikes import SpikeWatch


def test_a_spike_after_the_warmup_is_reported_and_left_out_of_the_mean():
    watch = SpikeWatch(factor=10.0, warmup=5, decay=0.5)
    assert [watch(k, 1.0) for k in range(1, 7)] == [None] * 6
    line = watch(7, 25.0)
    assert line == "loss spike at step 7: 25, 25.0x its running mean 1"
    assert watch.mean == pytest.approx(1.0)  # the spike did not move the mean
    assert watch(8, 9.0) is None  # below 10x
    assert watch.mean == pytest.approx(5.0)


def test_nothing_during_the_warmup_nor_when_off_nor_for_nan():
    watch = SpikeWatch(factor=10.0, warmup=100)
    assert all(watch(k, 1.0 if k % 2 else 1000.0) is None for k in range(1, 50))
    off = SpikeWatch(factor=None, warmup=0)
    assert all(off(k, v) is None for k, v in enumerate([1.0, 1e9]))
    assert SpikeWatch(warmup=0)(1, float("nan")) is None
