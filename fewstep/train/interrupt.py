"""Stopping training cleanly on SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends before it kills
a job): the step in progress finishes, a checkpoint is written, and the run stops with
:class:`~fewstep.errors.TrainingInterrupted`. A second SIGINT stops at once (the last checkpoint
stays intact). Under torchrun the ranks agree at every step, so all of them stop after the same one.
"""
from __future__ import annotations

import signal
import threading

import torch

__all__ = ["StopRequests"]


class StopRequests:
    """While entered (in the main thread only; elsewhere it never fires), SIGINT and SIGTERM set a flag
    instead of ending the process; :meth:`requested` says whether any rank got one."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequests:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signal_name = signal.Signals(signum).name

    def requested(self, dist=None, device=None) -> bool:
        """Whether a stop was asked for here or, under torchrun, on any rank (one all-reduce of a flag)."""
        mine = self.signal_name is not None
        if dist is None or dist.world == 1:
            return mine
        flag = torch.tensor([1.0 if mine else 0.0], device=device)
        anyone = bool(dist.mean(flag).item() > 0)
        if anyone and self.signal_name is None:
            self.signal_name = "a stop signal on another rank"
        return anyone
