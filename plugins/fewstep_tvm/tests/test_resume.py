"""A resumed TVM run continues its EMA target (the objective's state) and ends with the weights of a run
that never stopped."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from fewstep.api import train_recipe
from fewstep.run.checkpoint import latest_checkpoint
from fewstep_tvm.objective import TVM

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 1, emb_dim: 8}}
interpolant: {{name: ot_fm, eps: 0.0, T: 1.0}}
flowmap: {{parameterisation: euler_fm, second_time: stride, time_scale: 1.0}}
objective: {{name: tvm, target_ema_decay: 0.5}}
train: {{steps: 6, batch_size: 16, optimizer: adam, lr: 1e-2, log_every: 3, checkpoint_every: 3, threads: 1}}
output: {{dir: {out}}}
"""


def files(run):
    ckpt = latest_checkpoint(run)
    state = torch.load(ckpt / "state.pt", weights_only=True)
    return load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors")), state["objective"]


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stop_and_resume_gives_bit_identical_weights(write, tmp_path, regs, monkeypatch):
    straight = train_recipe(write("a.yaml", RECIPE.format(out=tmp_path)), registries=regs, progress=False)
    path = write("b.yaml", RECIPE.format(out=tmp_path))
    first = train_recipe(path, registries=regs, progress=False, stop_after=3)
    model, _, objective = files(first.run_dir)
    assert set(objective) == {"target"} and objective["target"].keys() == model.keys()
    assert not equal(objective["target"], model)  # the target lags: a resume that re-copied it would differ
    resumed = train_recipe(path, registries=regs, progress=False)
    assert (resumed.run_dir, resumed.start_step, resumed.end_step) == (first.run_dir, 3, 6)
    for a, b in zip(files(straight.run_dir), files(resumed.run_dir)):
        assert equal(a["target"], b["target"]) if "target" in a else equal(a, b)

    # without the target's state the resumed run differs: the test sees a lost EMA target
    monkeypatch.setattr(TVM, "load_state_dict", lambda self, state: None)
    path_c = write("c.yaml", RECIPE.format(out=tmp_path))
    train_recipe(path_c, registries=regs, progress=False, stop_after=3)
    lost = train_recipe(path_c, registries=regs, progress=False)
    assert not equal(files(lost.run_dir)[0], files(straight.run_dir)[0])
