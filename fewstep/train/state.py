"""The resumable training state, registered once (after edm2's ``CheckpointIO``).

The loop registers every object whose state a checkpoint must restore besides the weights (the
optimiser, the EMA's update count, the precision's loss scale, a stateful objective) in one
:class:`TrainState`; saving and loading walk the same parts, so the two cannot drift apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fewstep.errors import CheckpointError
from fewstep.protocols import Stateful
from fewstep.run.checkpoint import STATE_FORMAT as FORMAT  # 1: before TrainState (top-level "ema_updates")

__all__ = ["FORMAT", "TrainState"]


class TrainState:
    """Named parts, each with ``state_dict()`` / ``load_state_dict(state)`` (:class:`~fewstep.protocols.Stateful`)."""

    def __init__(self, **parts: Stateful):
        for name, part in parts.items():
            if not isinstance(part, Stateful):
                raise TypeError(f"training state part {name!r} has no state_dict/load_state_dict")
        self.parts = parts

    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **{name: part.state_dict() for name, part in self.parts.items()}}

    def load_state_dict(self, state: dict[str, Any], where: Path | str = "state.pt") -> None:
        """Restore every part; a part the checkpoint has no state for is a CheckpointError naming ``where``."""
        state = _upgrade(state)
        missing = [name for name in self.parts if name not in state]
        if missing:
            raise CheckpointError(f"{where}: holds no state for {', '.join(missing)} (was it written by another "
                                  "recipe or version?); use --fresh for a new run")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (fewstep 0.1.0): the EMA count was top-level and stateless parts had no entry."""
    if state.get("format", 1) >= FORMAT:
        return state
    state = dict(state)
    state["ema"] = {"updates": state.pop("ema_updates", 0)}
    state.setdefault("precision", {})
    state.setdefault("objective", {})
    return state
