"""A toy run with the tensorboard logger: the event files hold metrics.jsonl's scalars (read back with
TensorBoard's own EventAccumulator), the sample grids, the recipe, eval results and the HParams entry; a resumed
run appends to the same folder and its scalars equal metrics.jsonl again."""
from __future__ import annotations

import json

import pytest

from fewstep.api import evaluate_run, train_recipe
from fewstep.run.records import read_metrics

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 16, depth: 1, emb_dim: 8}
flowmap: {parameterisation: euler_fm}
objective: {name: fm}
train: {steps: 6, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 3, sample_every: 3,
        loggers: [jsonl, tensorboard]}
eval: {steps: [1, 2], reference_steps: null, n_samples: 64, metrics: [energy, sw2]}
"""


def _events(run):
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _same_as_metrics(acc, run):
    for key in ("loss", "grad_norm", "lr"):
        logged = _scalars(acc, f"train/{key}")
        expect = [(r["step"], r[key]) for r in read_metrics(run)]
        assert [s for s, _ in logged] == [s for s, _ in expect], key
        assert all(v == pytest.approx(w, rel=1e-6) for (_, v), (_, w) in zip(logged, expect)), key


def test_scalars_grids_recipe_eval_and_hparams(write, tmp_path, regs):
    run = tmp_path / "run"
    train_recipe(write("tb.yaml", RECIPE), run_dir=run, registries=regs, progress=False)
    acc = _events(run)
    _same_as_metrics(acc, run)
    assert [e.step for e in acc.Images("samples")] == [3, 6]
    text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()  # add_text's tensor
    assert "\n    objective: {name: fm," in text  # the resolved recipe, indented: a markdown code block
    assert acc.Tensors("status/text_summary")[-1].tensor_proto.string_val[0] == b"finished"

    report = evaluate_run(run, regs)
    acc = _events(run)
    for row in report["rows"]:
        for metric in ("energy", "sw2"):
            assert _scalars(acc, f"eval/{metric}/{row['steps']} steps") == [(6, pytest.approx(row[metric], rel=1e-6))]
    assert acc.PluginTagToContent("hparams")  # the HParams view: the recipe's settings against the eval values
    _same_as_metrics(acc, run)  # eval added no training scalars


def test_a_resumed_run_continues_the_same_event_folder(write, tmp_path, regs):
    recipe, run = write("tb.yaml", RECIPE), tmp_path / "run"
    train_recipe(recipe, run_dir=run, registries=regs, progress=False, stop_after=3)
    train_recipe(recipe, run_dir=run, registries=regs, progress=False)
    assert [r["step"] for r in read_metrics(run)] == [2, 3, 4, 6]
    _same_as_metrics(_events(run), run)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per session, one folder


def test_a_resume_from_an_earlier_checkpoint_drops_the_later_events(write, tmp_path, regs):
    """Steps logged after the checkpoint a run resumes from are purged, as they are from metrics.jsonl."""
    recipe, run = write("tb.yaml", RECIPE), tmp_path / "run"
    train_recipe(recipe, ["train.checkpoint_every=4"], run_dir=run, registries=regs, progress=False, stop_after=5)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_0000004", "step_0000005"]
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000005")  # as if the session had crashed after step 5's log
    train_recipe(recipe, ["train.checkpoint_every=4"], run_dir=run, registries=regs, progress=False)
    assert [r["step"] for r in read_metrics(run)] == [2, 4, 6]
    _same_as_metrics(_events(run), run)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
