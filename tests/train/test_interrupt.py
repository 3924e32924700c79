"""Stop requests (fewstep/train/interrupt.py): SIGINT and SIGTERM set a flag instead of ending the process,
a second SIGINT ends it, handlers are put back, and nothing is installed outside the main thread."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from fewstep.train.interrupt import StopRequests


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_flag_and_the_old_handler_comes_back(sig):
    before = signal.getsignal(sig)
    with StopRequests() as stops:
        assert not stops.requested()
        os.kill(os.getpid(), sig)
        assert stops.requested() and stops.signal_name == signal.Signals(sig).name
    assert signal.getsignal(sig) is before


def test_a_second_sigint_stops_at_once():
    with StopRequests():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_outside_the_main_thread_nothing_is_installed():
    before, seen = signal.getsignal(signal.SIGTERM), []

    def worker():
        with StopRequests():
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [before]


def test_the_ranks_agree_through_one_all_reduce():
    class TwoRanks:
        world = 2

        def __init__(self, other):
            self.other = other

        def mean(self, flag):
            return (flag + self.other) / 2

    quiet = StopRequests()
    assert not quiet.requested(TwoRanks(0.0)) and quiet.requested(TwoRanks(1.0))
    assert quiet.signal_name == "a stop signal on another rank"
