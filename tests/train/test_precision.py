"""Precision switches: bf16 and fp16 autocast train on a CPU, fp16's loss scale is checkpointed."""
from __future__ import annotations

import json

import pytest
import torch

from fewstep.api import train_recipe
from fewstep.run.checkpoint import latest_checkpoint, load_state
from fewstep.train.precision import Precision

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 32, depth: 2, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {obj}
train: {{steps: 6, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 3,
        precision: {precision}}}
output: {{dir: {out}}}
"""


def _recipe(write, tmp_path, precision, obj="{name: fm}"):
    return write(f"{precision}.yaml", RECIPE.format(obj=obj, precision=precision, out=tmp_path / "runs"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("obj", ["{name: fm}", "{name: imm, group_size: 4, k: 8}"])
def test_autocast_trains_on_cpu_in_low_precision(write, tmp_path, regs, precision, obj, monkeypatch):
    seen = []
    linear_forward = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(linear_forward(self, x).dtype) or
                        linear_forward(self, x))
    run = train_recipe(_recipe(write, tmp_path, precision, obj), registries=regs, progress=False).run_dir
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 4, 6] and all(torch.isfinite(torch.tensor(r["loss"])) for r in logs)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert low in seen  # the training forwards ran in low precision (evaluation afterwards runs in fp32)
    state = load_state(latest_checkpoint(run))
    assert ("scaler" in state["precision"]) == (precision == "fp16")
    assert all(p.dtype == torch.float32 for p in torch.load(latest_checkpoint(run) / "state.pt",
                                                             weights_only=True)["optimizer"]["state"][0].values()
               if torch.is_tensor(p) and p.is_floating_point())


def test_fp16_resume_restores_the_loss_scale(write, tmp_path, regs):
    recipe = _recipe(write, tmp_path, "fp16")
    a = train_recipe(recipe, ["output.name=a"], registries=regs, progress=False, stop_after=3).run_dir
    b = train_recipe(recipe, ["output.name=a"], registries=regs, progress=False).run_dir
    full = train_recipe(recipe, ["output.name=full"], registries=regs, progress=False).run_dir
    assert a == b
    from safetensors.torch import load_file

    resumed, straight = (load_file(latest_checkpoint(r) / "model.safetensors") for r in (b, full))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert load_state(latest_checkpoint(b))["precision"] == load_state(latest_checkpoint(full))["precision"]


def test_modes_and_errors(write, tmp_path):
    cpu = torch.device("cpu")
    assert Precision("fp32", cpu).dtype is None and Precision("tf32", cpu).scaler is None
    assert Precision("bf16", cpu).dtype == torch.bfloat16 and Precision("fp16", cpu).tolerates_overflow
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp64", cpu)
    from typer.testing import CliRunner

    from fewstep.cli import app

    res = CliRunner().invoke(app, ["check", str(_recipe(write, tmp_path, "fp64"))])
    assert res.exit_code == 2 and "train.precision: input should be 'fp32', 'tf32', 'bf16' or 'fp16'" in res.output
