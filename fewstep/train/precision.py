"""Numeric precision of the training step: fp32, tf32, bf16 or fp16 (with loss scaling).

IMM trains in TF32 (Table 5) and its DiT-XL headline run in FP16 (App. I.6, Table 8). ``tf32``
lets CUDA matmuls and convolutions use TensorFloat-32 (no effect on a CPU); ``bf16`` and ``fp16``
run the forward passes and the loss under ``torch.autocast`` (weights, optimiser and EMA stay
fp32); ``fp16`` also scales the loss (``torch.amp.GradScaler``), skipping the optimiser step when a
gradient overflows. An objective may keep a pass in fp32 (IMM's ``target_fp32``).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

MODES = ("fp32", "tf32", "bf16", "fp16")


class Precision:
    def __init__(self, mode: str, device: torch.device):
        if mode not in MODES:
            raise ValueError(f"precision must be one of {', '.join(MODES)} (got {mode!r})")
        self.mode, self.device = mode, torch.device(device)
        if self.device.type == "cuda":  # set both ways: an earlier run in this process may have changed them
            torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
            torch.backends.cudnn.allow_tf32 = mode == "tf32"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(self.device.type) if mode == "fp16" else None

    def autocast(self):
        """The context of the forward passes and the loss."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        """Bring the gradients back to their true scale (before clipping)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        """The optimiser step (skipped by the scaler when a gradient is inf/NaN)."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    @property
    def tolerates_overflow(self) -> bool:
        """fp16 steps may overflow: the scaler skips them and lowers the scale, the run goes on."""
        return self.scaler is not None

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
