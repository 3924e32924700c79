"""The plugin: registered as a logger, its Config (offline by default), the conformance kit, one line when
wandb is missing, and ``mode: disabled`` touching nothing."""
from __future__ import annotations

import importlib.util

import pytest

from fewstep.errors import ConfigError
from fewstep.run.tracking import RunInfo
from fewstep.testing import check_component
from fewstep_wandb import WandbConfig
from fewstep_wandb.logger import ID_FILE, WandbLogger, run_id


def test_registered_with_its_config(regs):
    entry = regs.loggers.get("wandb")
    assert entry.plugin == "wandb" and entry.config is WandbConfig
    cfg = WandbConfig()
    assert (cfg.mode, cfg.project, cfg.entity, cfg.group, cfg.tags) == ("offline", "fewstep", None, None, [])
    with pytest.raises(ValueError):
        WandbConfig(mode="live")


def test_conformance(regs, monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    check_component(regs.loggers.get("wandb"))


def test_missing_wandb_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^train.loggers: the wandb logger needs the wandb package: "
                                          r"pip install 'fewstep\[wandb\]'"):
        WandbLogger(WandbConfig())


def test_the_run_id_is_kept_in_the_run_directory(tmp_path):
    first = run_id(tmp_path)
    assert first == (tmp_path / ID_FILE).read_text().strip() == run_id(tmp_path)
    assert len(first) == 12 and first.isalnum() and first == first.lower()  # W&B ids: [a-z0-9]


def test_disabled_mode_calls_nothing(tmp_path):
    logger = WandbLogger(WandbConfig(mode="disabled"))
    logger.start(RunInfo(tmp_path, "g", "g/r", {}, 2, 0))
    logger.scalars(1, {"loss": 1.0})
    logger.results("eval", [{"steps": 1, "sw2": 0.1}], 2)
    logger.finish("finished")
    assert list(tmp_path.iterdir()) == []
