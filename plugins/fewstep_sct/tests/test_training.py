"""sCT in the training loop: the conformance kit, a short run (w_phi trained by the run's optimiser, its logs), and
a resumed run that ends bit-identical to an uninterrupted one, w_phi included."""
from __future__ import annotations

import math

import torch
from safetensors.torch import load_file

from fewstep.api import train_recipe
from fewstep.run.checkpoint import latest_checkpoint
from fewstep.run.records import read_metrics
from fewstep.testing import check_objective

TRIGFLOW = {"interpolant": {"name": "vp_cosine", "eps": 0.0, "T": 0.99602},
            "flowmap": {"parameterisation": "simple_edm", "second_time": "none", "time_scale": math.pi / 2}}
RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 16, depth: 1, emb_dim: 8}
interpolant: {name: vp_cosine, eps: 0.0, T: 0.99602}
flowmap: {parameterisation: simple_edm, second_time: none, time_scale: 1.5707963267948966}
objective: {name: sct, warmup_steps: 20}
train: {steps: 40, batch_size: 32, optimizer: adam, lr: 1e-2, log_every: 10, checkpoint_every: 10, threads: 1}
"""


def test_conformance(regs):
    check_objective(regs.objectives.get("sct"), registries=regs, **TRIGFLOW)


def test_a_short_run_trains_w_phi_and_logs_it(write, tmp_path, regs):
    """40 steps: finite losses; w_phi, zero at the start, moved by the run's optimiser and checkpointed; every
    record carries mean w_phi, the raw tangent norm and the warm-up factor r = min(1, step / 20)."""
    run = train_recipe(write("sct.yaml", RECIPE + f"output: {{dir: {tmp_path}}}\n"), registries=regs,
                       progress=False).run_dir
    records = read_metrics(run)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert all(math.isfinite(r["loss"]) and r["tangent_norm"] > 0 for r in records)
    assert [r["warmup_r"] for r in records] == [0.225, 0.725, 1.0, 1.0]  # means over steps 0-9, 10-19 ...
    assert records[-1]["w_phi"] > records[0]["w_phi"] > 0  # e^w grows toward D / ||F - F^- - g||^2 > 1
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)
    assert state["objective"]["w_phi"]["b"].item() > 0.01 and state["objective"]["w_phi"]["a"].abs().sum() > 0


def test_resume_is_bit_identical_w_phi_included(write, tmp_path, regs):
    """Stop after 20 steps and resume: the weights, the evaluation EMA and w_phi (the objective's state, with its
    optimiser moments in the run's) end equal to those of an uninterrupted run."""
    straight = train_recipe(write("a.yaml", RECIPE + f"output: {{dir: {tmp_path / 'a'}}}\n"), registries=regs,
                            progress=False).run_dir
    path = write("b.yaml", RECIPE + f"output: {{dir: {tmp_path / 'b'}}}\n")
    first = train_recipe(path, registries=regs, progress=False, stop_after=20)
    resumed = train_recipe(path, registries=regs, progress=False)
    assert resumed.run_dir == first.run_dir and (resumed.start_step, resumed.end_step) == (20, 40)
    a, b = latest_checkpoint(straight), latest_checkpoint(resumed.run_dir)
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (torch.load(c / "state.pt", weights_only=True)["objective"]["w_phi"] for c in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and sa["b"].item() != 0
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(resumed.run_dir)]
