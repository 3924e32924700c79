"""Checkpoints: weights (raw + EMA) as safetensors with a config.json, plus a resumable state.

Layout: ``<run>/checkpoints/step_0001000/{model,ema}.safetensors, config.json, state.pt``.
Each checkpoint is written into a temporary directory and renamed into place
(:func:`fewstep.files.atomic_dir`), so a crash never leaves a half-written checkpoint where resume
would look. ``state.pt`` holds only plain containers and tensors (the training state registered in
:class:`fewstep.train.state.TrainState`, and the step), which ``torch.load`` reads with
``weights_only=True``: a checkpoint never runs code.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fewstep.errors import CheckpointError
from fewstep.files import atomic_dir

_STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FORMAT = 2  # of state.pt; 1: fewstep 0.1.0, before fewstep.train.state.TrainState (no "format" key)
FILES = ("model.safetensors", "ema.safetensors", "config.json", "state.pt")


def checkpoint_step(ckpt: Path) -> int:
    """The step of a checkpoint folder ``step_0001000`` (1000)."""
    m = _STEP_DIR.match(Path(ckpt).name)
    if not m:
        raise CheckpointError(f"{ckpt}: not a checkpoint folder (step_<number>)")
    return int(m.group(1))


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir()
             if _STEP_DIR.match(d.name) and d.is_dir() and all((d / f).exists() for f in FILES)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, step: int, net: torch.nn.Module, ema_net: torch.nn.Module,
                    state: dict[str, Any], config: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the ``keep`` most recent ones."""
    final = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    meta = {"step": str(step)}
    with atomic_dir(final) as tmp:
        save_file(_tensors(net), str(tmp / "model.safetensors"), metadata=meta)
        save_file(_tensors(ema_net), str(tmp / "ema.safetensors"), metadata=meta)
        (tmp / "config.json").write_text(json.dumps({"step": step, "recipe": config}, indent=1))
        torch.save({**state, "step": step}, tmp / "state.pt")
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_weights(path: Path, module: torch.nn.Module) -> None:
    """Load a safetensors file into ``module``; corrupt or mismatched files raise CheckpointError."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"{path}: does not match the recipe's network ({what})")
    for k, v in own.items():
        if tensors[k].shape != v.shape:
            raise CheckpointError(f"{path}: does not match the recipe's network "
                                  f"({k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)})")
    module.load_state_dict(tensors)


def load_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__})") from None


def load_config(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
