"""Evaluation of image runs: FD-digits through torch-fidelity beside point metrics, labels, grids."""
from __future__ import annotations

import pytest
import torch

from fewstep.api import evaluate_run, train_recipe
from fewstep.errors import ConfigError

DIGITS = """\
data: {{name: digits, conditional: {cond}}}
network: {{name: mlp, width: 64, depth: 2, emb_dim: 16}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: fm}}
sampler: {{name: euler, guidance: {guidance}}}
train: {{steps: 20, batch_size: 64, optimizer: adam, lr: 1e-3, log_every: 10, checkpoint_every: 20}}
eval: {{steps: [1, 2], reference_steps: null, n_samples: 300, metrics: [fd_digits, energy]}}
output: {{dir: {out}}}
"""


def _train(write, tmp_path, regs, cond=False, guidance=1.0):
    recipe = write("digits.yaml", DIGITS.format(cond=str(cond).lower(), guidance=guidance, out=tmp_path / "runs"))
    return train_recipe(recipe, registries=regs, progress=False).run_dir


def test_digits_run_evaluates_fd_digits_and_point_metrics_and_writes_an_image_grid(write, tmp_path, regs):
    run = _train(write, tmp_path, regs)
    assert (run / "samples" / "step_0000020.png").stat().st_size > 0
    out = evaluate_run(run, regs)
    assert set(out["floor"]) == {"FD-digits", "KID-digits", "energy"}
    for row in out["rows"]:
        assert {"FD-digits", "KID-digits", "energy", "nfe", "samples_per_s"} <= set(row)
        assert row["FD-digits"] > out["floor"]["FD-digits"] > 0  # 20 steps of training is far from the data
    assert (run / "eval.json").exists()


def test_class_conditional_digits_sample_with_labels_and_guidance(write, tmp_path, regs):
    run = _train(write, tmp_path, regs, cond=True, guidance=2.0)
    out = evaluate_run(run, regs, steps=[1], n=64)
    assert out["rows"][0]["nfe"] == 2  # CFG: conditional and unconditional G in one batched call


def test_an_image_metric_on_point_data_is_a_clean_error(write, tmp_path, regs):
    recipe = write("pts.yaml", DIGITS.format(cond="false", guidance=1.0, out=tmp_path / "runs")
                   .replace("name: digits, conditional: false", "name: moons"))
    run = train_recipe(recipe, registries=regs, progress=False).run_dir
    with pytest.raises(ConfigError, match="fd_digits needs image data; data is points"):
        evaluate_run(run, regs)


def test_fid_without_inception_weights_is_one_line_naming_the_file(write, tmp_path, regs, monkeypatch):
    from typer.testing import CliRunner

    from fewstep.cli import app

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub: no weights anywhere
    monkeypatch.delenv("FEWSTEP_INCEPTION_WEIGHTS", raising=False)
    recipe = write("fid.yaml", DIGITS.format(cond="false", guidance=1.0, out=tmp_path / "runs")
                   .replace("metrics: [fd_digits, energy]", "metrics: [fid]"))
    run = train_recipe(recipe, registries=regs, progress=False).run_dir
    res = CliRunner().invoke(app, ["eval", str(run)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = res.output.strip().splitlines()
    assert "weights-inception-2015-12-05-6726825d.pth" in line
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in line and "FEWSTEP_INCEPTION_WEIGHTS" in line


def test_a_stored_reference_is_measured_without_handing_the_metric_data(write, tmp_path, regs):
    """fd_digits against `fewstep fid-ref --data digits` statistics: FD-digits alone (KID needs reference images),
    a floor of fresh data against them, and the metric is handed no data images."""
    from typer.testing import CliRunner

    from fewstep.cli import app
    from fewstep.data.images import load_digits_dataset
    from fewstep.eval.evaluate import _measure

    ref = tmp_path / "digits.npz"
    res = CliRunner().invoke(app, ["fid-ref", "--data", "digits", "--features", "digits", "--out", str(ref), "-q",
                                   "--workers", "0"])
    assert res.exit_code == 0, res.output
    recipe = write("digits.yaml", DIGITS.format(cond="false", guidance=1.0, out=tmp_path / "runs").replace(
        "metrics: [fd_digits, energy]", f"metrics: [{{name: fd_digits, reference: {ref}}}]"))
    run = train_recipe(recipe, registries=regs, progress=False).run_dir
    out = evaluate_run(run, regs)
    assert set(out["floor"]) == {"FD-digits"} and all(set(r) >= {"FD-digits"} and "KID-digits" not in r
                                                      for r in out["rows"])
    assert all(r["FD-digits"] > out["floor"]["FD-digits"] > 0 for r in out["rows"])

    class Own:
        kind, own_reference = "images", True

        def __call__(self, x, y, generator=None):
            self.got = y
            return 0.0

    own, data = Own(), load_digits_dataset()
    batch = data.sample(4, torch.Generator().manual_seed(0)).x
    _measure("own", own, batch, batch, data, None)
    assert own.got is None
