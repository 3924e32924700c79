"""fewstep/run/tracking.py: metrics.jsonl is always written; other loggers are called in order, a failing one
is reported once and dropped while training goes on; eval results reach the recipe's loggers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewstep.api import evaluate_run, train_recipe
from fewstep.builtin import NoConfig
from fewstep.registry import Registrar
from fewstep.run.records import read_metrics
from fewstep.run.tracking import JSONL, JsonlLogger, RunInfo, Tracker, result_values

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 1, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
train: {{steps: 6, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 3,
        loggers: {loggers}}}
eval: {{steps: [1], reference_steps: null, n_samples: 64, metrics: [energy]}}
"""


class Recording:
    """A logger that records its calls (a class attribute, as the registry builds it)."""

    calls: list[tuple] = []

    def __init__(self, cfg=None):
        pass

    def start(self, run):
        Recording.calls.append(("start", run.session, run.start_step, run.group))

    def scalars(self, step, values):
        Recording.calls.append(("scalars", step, values["loss"]))

    def image(self, step, tag, path):
        Recording.calls.append(("image", step, tag, Path(path).exists()))

    def results(self, kind, rows, step):
        Recording.calls.append(("results", kind, step, [r["steps"] for r in rows]))

    def finish(self, status):
        Recording.calls.append(("finish", status))


class Failing:
    """A logger whose disk is full: it fails at its first scalars."""

    def __init__(self, cfg=None):
        pass

    def start(self, run):
        pass

    def scalars(self, step, values):
        raise OSError("no space left on device")

    def image(self, step, tag, path):
        pass

    def results(self, kind, rows, step):
        pass

    def finish(self, status):
        pass


@pytest.fixture
def regs_with(regs):
    reg = Registrar(regs.loggers, "tests")
    reg.add("recording", Recording, NoConfig, "records its calls")
    reg.add("failing", Failing, NoConfig, "fails at its first scalars")
    reg.commit()
    Recording.calls = []
    return regs


def _info(tmp_path, start=0):
    return RunInfo(tmp_path, "g", "g/r", {}, 10, start)


def test_jsonl_is_always_first_and_once(regs_with):
    specs = [regs_with.loggers.get(n).model()(name=n) for n in ("recording", "jsonl", "recording")]
    tracker = Tracker.build(specs, regs_with)
    assert tracker.names == [JSONL, "recording", "recording"] and isinstance(tracker.loggers[0], JsonlLogger)
    assert Tracker.build(specs, regs_with, record=False).names == ["recording", "recording"]
    assert Tracker.build().names == [JSONL]


def test_a_failing_logger_is_reported_once_and_dropped(tmp_path):
    said: list[str] = []
    tracker = Tracker([JsonlLogger(), Failing(), Recording()], [JSONL, "failing", "recording"], warn=said.append)
    Recording.calls = []
    tracker.start(_info(tmp_path))
    for step in (1, 2):
        tracker.scalars(step, {"step": step, "loss": 0.5})
    tracker.finish("finished")
    assert len(said) == 1 and "logger 'failing' failed in scalars (OSError: no space left on device)" in said[0]
    assert tracker.names == [JSONL, "recording"]
    assert [c[0] for c in Recording.calls] == ["start", "scalars", "scalars", "finish"]
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]  # metrics.jsonl still written


def test_metrics_jsonl_failures_are_the_runs(tmp_path):
    tracker = Tracker([JsonlLogger()], [JSONL], warn=lambda m: None)
    tracker.start(_info(tmp_path / "missing"))  # nothing to trim yet
    with pytest.raises(OSError):
        tracker.scalars(1, {"step": 1, "loss": 0.5})


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6)))
    JsonlLogger().start(_info(tmp_path, start=4))
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4]


def test_training_goes_on_past_a_failing_logger_and_hands_grids_and_eval_to_the_others(regs_with, write, tmp_path):
    recipe = write("r.yaml", RECIPE.format(loggers="[failing, recording]"))
    said: list[str] = []
    run = tmp_path / "run"
    res = train_recipe(recipe, ["train.sample_every=3"], run_dir=run, registries=regs_with, progress=False,
                       log=said.append)
    assert res.end_step == 6 and [r["step"] for r in read_metrics(run)] == [2, 4, 6]
    assert sum("logger 'failing' failed" in s for s in said) == 1
    calls = Recording.calls
    assert calls[0] == ("start", "train", 0, tmp_path.name) and calls[-1] == ("finish", "finished")
    assert [c[1] for c in calls if c[0] == "scalars"] == [2, 4, 6]
    assert [c[1:] for c in calls if c[0] == "image"] == [(3, "samples", True), (6, "samples", True)]

    Recording.calls = []
    evaluate_run(run, regs_with)
    assert Recording.calls == [("start", "eval", 6, tmp_path.name), ("results", "eval", 6, [1]),
                               ("finish", "evaluated")]


def test_a_stopped_session_says_so_and_the_resumed_one_starts_at_its_checkpoint(regs_with, write, tmp_path):
    recipe = write("r.yaml", RECIPE.format(loggers="[recording]"))
    run = tmp_path / "run"
    train_recipe(recipe, run_dir=run, registries=regs_with, progress=False, stop_after=3)
    assert Recording.calls[-1] == ("finish", "stopped")
    Recording.calls = []
    train_recipe(recipe, run_dir=run, registries=regs_with, progress=False)
    assert Recording.calls[0][:3] == ("start", "train", 3) and Recording.calls[-1] == ("finish", "finished")
    assert [r["step"] for r in read_metrics(run)] == [2, 3, 4, 6]  # the first session logged its last step


def test_without_other_loggers_eval_hands_nothing_on(regs_with, write, tmp_path):
    recipe = write("r.yaml", RECIPE.format(loggers="[jsonl]"))
    run = tmp_path / "run"
    train_recipe(recipe, run_dir=run, registries=regs_with, progress=False)
    evaluate_run(run, regs_with)
    assert Recording.calls == []


def test_result_values_name_each_metric_by_kind_and_step_count():
    rows = [{"steps": 1, "nfe": 1, "seconds": 0.1, "samples_per_s": 9.0, "sw2": 0.5, "energy": 2},
            {"steps": 8, "nfe": 8, "sw2": 0.25, "note": "text"}]
    assert result_values("eval", rows) == {"eval/sw2/1 steps": 0.5, "eval/energy/1 steps": 2.0,
                                           "eval/sw2/8 steps": 0.25}
