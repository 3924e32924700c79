"""Training end to end: a metric improves, resume is exact, NaNs stop cleanly, checkpoints are guarded."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fewstep.api import evaluate_run, train_recipe
from fewstep.errors import CheckpointError, TrainingDiverged
from fewstep.run.checkpoint import checkpoint_dirs, latest_checkpoint

TINY = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 64, depth: 3, emb_dim: 32}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
train:
  steps: {steps}
  batch_size: 256
  optimizer: adam
  lr: 2e-3
  ema_decay: 0.99
  log_every: 10
  checkpoint_every: {every}
  keep_checkpoints: 2
eval: {{steps: [1, 8], reference_steps: null, n_samples: 1024, metrics: [energy, sw2]}}
output: {{dir: {out}}}
"""


@pytest.fixture
def recipe(tmp_path, write):
    def make(steps=60, every=20, name="tiny.yaml"):
        return write(name, TINY.format(steps=steps, every=every, out=tmp_path / "runs"))
    return make


def weights(run):
    ckpt = latest_checkpoint(run)
    return load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))


def test_fm_training_improves_energy_distance(recipe, regs):
    # At initialisation G ~ 0, so samples are the prior N(0, sigma_d^2 I): already the data's std.
    path = recipe(steps=1000, every=1000)
    first = train_recipe(path, registries=regs, progress=False, stop_after=1)
    before = evaluate_run(first.run_dir, regs, write=False)["rows"][1]  # 8 Euler steps
    result = train_recipe(path, registries=regs, progress=False)  # resumes the same run
    assert result.run_dir == first.run_dir and result.start_step == 1 and result.end_step == 1000
    after = evaluate_run(result.run_dir, regs)["rows"][1]
    assert after["energy"] < 0.4 * before["energy"], (before, after)  # measured: 0.0328 -> 0.0082
    assert after["sw2"] < 0.6 * before["sw2"], (before, after)  # measured: 0.174 -> 0.067
    assert (result.run_dir / "eval.json").exists()
    run = result.run_dir
    assert (run / "recipe.yaml").exists() and (run / "samples" / "step_0001000.png").exists()
    assert "_provenance" in (run / "recipe.yaml").read_text()


def test_resume_after_a_crash_gives_identical_weights(recipe, regs, monkeypatch, tmp_path):
    from fewstep_fm.objective import FlowMatching

    straight = train_recipe(recipe(name="a.yaml"), registries=regs, progress=False)
    original = FlowMatching.loss

    def crash_at_45(self, fm, batch, step):
        if step == 45:
            raise RuntimeError("simulated crash")
        return original(self, fm, batch, step)

    monkeypatch.setattr(FlowMatching, "loss", crash_at_45)
    path_b = recipe(name="b.yaml")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_recipe(path_b, registries=regs, progress=False)
    monkeypatch.setattr(FlowMatching, "loss", original)
    resumed = train_recipe(path_b, registries=regs, progress=False)
    assert resumed.start_step == 40
    for a, b in zip(weights(straight.run_dir), weights(resumed.run_dir)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 61, 10))  # records after the checkpoint were dropped, then re-logged
    assert [d.name for d in checkpoint_dirs(resumed.run_dir)] == ["step_0000040", "step_0000060"]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(recipe, regs, monkeypatch):
    from fewstep_fm.objective import FlowMatching

    original = FlowMatching.loss

    def nan_at_30(self, fm, batch, step):
        loss, logs = original(self, fm, batch, step)
        return (loss * float("nan") if step == 30 else loss), logs

    monkeypatch.setattr(FlowMatching, "loss", nan_at_30)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 31; last good checkpoint kept"):
        train_recipe(recipe(), registries=regs, progress=False)
    run = next((recipe().parent / "runs" / "tiny").iterdir())
    assert latest_checkpoint(run).name == "step_0000020"
    assert all(torch.isfinite(v).all() for v in weights(run)[0].values())


def test_corrupt_and_mismatched_checkpoints_are_refused(recipe, regs, write, tmp_path):
    result = train_recipe(recipe(steps=20, every=20), registries=regs, progress=False)
    run = result.run_dir
    wider = write("wide.yaml", recipe(steps=40).read_text().replace("width: 64", "width: 96"))
    with pytest.raises(CheckpointError, match=r"trained with a different recipe \(differs in network.width\)"):
        train_recipe(wider, run_dir=run, registries=regs, progress=False)
    (latest_checkpoint(run) / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable checkpoint"):
        train_recipe(recipe(steps=40), run_dir=run, registries=regs, progress=False)


def test_half_written_checkpoints_are_ignored(recipe, regs):
    result = train_recipe(recipe(steps=20, every=20), registries=regs, progress=False)
    (result.run_dir / "checkpoints" / ".tmp-step_0000040-123").mkdir()
    (result.run_dir / "checkpoints" / "step_0000050").mkdir()  # incomplete: no files
    assert latest_checkpoint(result.run_dir).name == "step_0000020"


def test_a_finished_run_is_not_resumed_and_steps_can_be_extended(recipe, regs):
    path = recipe(steps=20, every=20)
    first = train_recipe(path, registries=regs, progress=False)
    again = train_recipe(path, registries=regs, progress=False)
    assert again.run_dir != first.run_dir and again.start_step == 0
    longer = train_recipe(path, ["train.steps=30"], run_dir=first.run_dir, registries=regs, progress=False)
    assert (longer.start_step, longer.end_step) == (20, 30)


def test_micro_batch_takes_the_same_steps_as_the_equivalent_accumulation(recipe, regs):
    """micro_batch 64 of batch 256 on one process is accumulate 4: the same shards, seeds and weights."""
    path = recipe(steps=20, every=20)
    micro = train_recipe(path, ["output.name=micro", "train.micro_batch=64"], registries=regs, progress=False)
    acc = train_recipe(path, ["output.name=acc", "train.accumulate=4"], registries=regs, progress=False)
    a, b = weights(micro.run_dir)[0], weights(acc.run_dir)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sets, expect", [
    (["train.micro_batch=64", "train.accumulate=2"], "set micro_batch or accumulate, not both"),
    (["train.micro_batch=100"], "micro_batch 100 must divide batch_size 256"),
    (["objective={name: imm, group_size: 8}", "train.micro_batch=12", "train.batch_size=240"],
     "objective.group_size: must divide train.micro_batch (got group_size 8, micro_batch 12)"),
])
def test_micro_batch_settings_that_cannot_work_are_recipe_errors(recipe, regs, sets, expect):
    from fewstep.config import load_recipe
    from fewstep.errors import RecipeError

    with pytest.raises(RecipeError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(recipe(), sets, regs)


def test_cuda_out_of_memory_is_one_line_naming_the_micro_batch(recipe, regs, monkeypatch):
    from fewstep.errors import ConfigError
    from fewstep_fm.objective import FlowMatching

    def oom(self, fm, batch, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(FlowMatching, "loss", oom)
    with pytest.raises(ConfigError) as exc:
        train_recipe(recipe(), ["train.micro_batch=128"], registries=regs, progress=False)
    line = str(exc.value)
    assert line.startswith("train.micro_batch: CUDA ran out of memory at 128 samples per pass on one device "
                           "(batch_size 256 / 1 process(es) / 2 accumulation step(s)); try --set train.micro_batch=64")
    assert "\n" not in line


def test_an_objectives_own_parameters_are_trained_checkpointed_and_resumed(recipe, regs, monkeypatch):
    """protocols.Trainable (sCT's learned weighting): the run's optimiser steps the objective's parameters
    with the network's, and a resumed run ends where an uninterrupted one does, those parameters included."""
    import fewstep_fm.objective as fm_objective

    class WithWeight(fm_objective.FlowMatching):
        def __init__(self, cfg, interpolant):
            super().__init__(cfg, interpolant)
            self.w = torch.nn.Parameter(torch.zeros(()))

        def trainable(self, device):
            self.w.data = self.w.data.to(device)
            return [self.w]

        def loss(self, fm, batch, step):
            if step == getattr(self, "crash_at", -1):
                raise RuntimeError("simulated crash")
            loss, logs = super().loss(fm, batch, step)
            return loss + (self.w - 3.0) ** 2, logs

        def state_dict(self):
            return {"w": self.w.detach().clone()}

        def load_state_dict(self, state):
            self.w.data.copy_(state["w"])

    made = []
    monkeypatch.setattr(fm_objective, "FlowMatching", lambda cfg, ip: made.append(WithWeight(cfg, ip)) or made[-1])
    straight = train_recipe(recipe(name="a.yaml"), registries=regs, progress=False)
    w_straight = made[-1].w.detach().clone()
    assert 0.1 < w_straight.item() < 0.121  # Adam moves it about lr = 2e-3 a step towards 3: 60 steps, 0.12

    monkeypatch.setattr(WithWeight, "crash_at", 45, raising=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_recipe(recipe(name="b.yaml"), registries=regs, progress=False)
    monkeypatch.setattr(WithWeight, "crash_at", -1, raising=False)
    resumed = train_recipe(recipe(name="b.yaml"), registries=regs, progress=False)
    assert resumed.start_step == 40 and torch.equal(made[-1].w.detach(), w_straight)
    for a, b in zip(weights(straight.run_dir), weights(resumed.run_dir)):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_loss_spike_is_reported_with_its_step_and_counted_and_the_run_goes_on(recipe, regs, monkeypatch, capsys):
    from fewstep_fm.objective import FlowMatching

    original = FlowMatching.loss

    def spike_at_150(self, fm, batch, step):
        loss, logs = original(self, fm, batch, step)
        return (loss * 1000 if step == 149 else loss), logs

    monkeypatch.setattr(FlowMatching, "loss", spike_at_150)
    result = train_recipe(recipe(steps=200, every=200), registries=regs, progress=True)
    assert result.end_step == 200
    lines = [line for line in capsys.readouterr().err.splitlines() if "spike" in line]
    assert len(lines) == 1 and "loss spike at step 150: " in lines[0] and "x its running mean" in lines[0]
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_spikes"]) for r in records if "loss_spikes" in r] == [(150, 1)]
