"""Every image backbone trains IMM end to end for a few steps (class-conditional digits, label
dropout, CFG sampling for the grid), through the same recipe path a user runs."""
from __future__ import annotations

import json

import pytest

from fewstep.api import train_recipe

BACKBONES = {
    "unet": ("{name: digits, conditional: true}",
             "{name: unet, channels: [8, 16], attention: [false, true], layers_per_block: 1, dropout: 0.1, "
             "norm_groups: 4, head_dim: 4}", "simple_edm"),
    "dit": ("{name: digits, size: 16, conditional: true}",
            "{name: dit, size: null, hidden: 32, depth: 2, heads: 4, patch: 4}", "euler_fm"),
}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_imm_trains_a_few_steps_on_digits(backbone, write, tmp_path, regs):
    data, network, param = BACKBONES[backbone]
    recipe = write(f"{backbone}.yaml", f"""\
data: {data}
network: {network}
flowmap: {{parameterisation: {param}}}
objective: {{name: imm, group_size: 4, k: 10, label_dropout: 0.1}}
sampler: {{name: pushforward, guidance: 1.5}}
train: {{steps: 4, batch_size: 16, optimizer: adamw, lr: 1e-4, log_every: 2, checkpoint_every: 4}}
eval: {{steps: [1, 2], reference_steps: null, n_samples: 32, metrics: [energy]}}
output: {{dir: {tmp_path / 'runs'}}}
""")
    run = train_recipe(recipe, registries=regs, progress=False).run_dir
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 4] and all(0 < r["loss"] < float("inf") for r in logs)
    assert (run / "samples" / "step_0000004.png").exists()


@pytest.mark.parametrize("objective", ["{name: fm, label_dropout: 0.1}", "{name: ct, label_dropout: 0.1}"])
def test_fm_and_ct_train_class_conditionally_with_label_dropout(objective, write, tmp_path, regs):
    recipe = write("obj.yaml", f"""\
data: {{name: digits, conditional: true}}
network: {{name: mlp, width: 32, depth: 2, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {objective}
sampler: {{name: euler, guidance: 2.0}}
train: {{steps: 4, batch_size: 16, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 4}}
eval: {{steps: [1], reference_steps: null, n_samples: 32, metrics: [energy]}}
output: {{dir: {tmp_path / 'runs'}}}
""")
    run = train_recipe(recipe, registries=regs, progress=False).run_dir
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["loss"] < float("inf") for r in logs)
