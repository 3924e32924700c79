"""The plugin: registered as a logger, its Config, the conformance kit, and one line when tensorboard is missing."""
from __future__ import annotations

import importlib.util

import pytest

from fewstep.errors import ConfigError
from fewstep.testing import check_component
from fewstep_tensorboard import TensorBoardConfig
from fewstep_tensorboard.logger import TensorBoardLogger, flat_settings


def test_registered_with_its_config(regs):
    entry = regs.loggers.get("tensorboard")
    assert entry.plugin == "tensorboard" and entry.config is TensorBoardConfig
    cfg = TensorBoardConfig()
    assert (cfg.subdir, cfg.images) == ("tensorboard", True)
    with pytest.raises(ValueError):
        TensorBoardConfig(flush_secs=0)


def test_conformance(regs):
    pytest.importorskip("tensorboard")
    check_component(regs.loggers.get("tensorboard"))


def test_missing_tensorboard_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^train.loggers: the tensorboard logger needs the tensorboard package: "
                                          r"pip install 'fewstep\[tensorboard\]'"):
        TensorBoardLogger(TensorBoardConfig())


def test_flat_settings_are_the_recipes_scalars():
    recipe = {"objective": {"name": "imm", "kernel": {"name": "laplace", "eps": 1e-8}},
              "train": {"steps": 10, "betas": [0.9, 0.99], "compile": False, "init": None},
              "eval": {"metrics": [{"name": "sw2"}]}}
    assert flat_settings(recipe) == {"objective.name": "imm", "objective.kernel.name": "laplace",
                                     "objective.kernel.eps": 1e-8, "train.steps": 10, "train.betas.0": 0.9,
                                     "train.betas.1": 0.99, "train.compile": False, "eval.metrics.0.name": "sw2"}


def test_fewstep_check_notes_the_missing_package_and_train_writes_nothing(monkeypatch, regs, write, tmp_path):
    from fewstep.api import train_recipe
    from fewstep.config import load_recipe
    from fewstep.config.recipe import missing_resources

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    path = write("r.yaml", "data: eight_gaussians\nnetwork: mlp\nobjective: fm\n"
                           f"train: {{loggers: [jsonl, tensorboard]}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    assert missing_resources(load_recipe(path, [], regs)) == [
        "train.loggers: the tensorboard logger needs the tensorboard package: pip install 'fewstep[tensorboard]'"]
    with pytest.raises(ConfigError, match="^train.loggers: the tensorboard logger needs"):
        train_recipe(path, registries=regs, progress=False)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
