"""The shortcut plugin as fewstep sees it (fewstep_shortcut/__init__.py): the conformance kit, the Config's
defaults against SC-code, its recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from fewstep.config import load_recipe, recipe_dict
from fewstep.testing import check_component
from fewstep_shortcut import ShortcutConfig

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def test_defaults_are_sc_codes():
    cfg = ShortcutConfig()
    assert (cfg.bootstrap_fraction, cfg.levels, cfg.target, cfg.target_ema_decay, cfg.clip) == (
        0.125, 7, "ema", 0.999, 4.0)  # bootstrap_every 8, 7 levels down to 1/128, bootstrap_ema, EMA, clip +-4


@pytest.mark.parametrize("options, sections", [
    ({}, {}),
    ({"target": "online", "bootstrap_fraction": 0.5, "clip": None},
     {"flowmap": {"parameterisation": "simple_edm", "second_time": "stride"}}),
])
def test_conformance(regs, options, sections):
    check_component(regs.objectives.get("shortcut"), options, **sections)


@pytest.mark.parametrize("name", ["shortcut_toy", "shortcut_digits"])
def test_recipes_compare_with_fm_at_the_same_budget(regs, name):
    """The data, network and training budget of the FM recipe of the same data set: a head-to-head run."""
    ours = recipe_dict(load_recipe(RECIPES / f"{name}.yaml", registries=regs))
    fm = recipe_dict(load_recipe(RECIPES / f"{name.replace('shortcut', 'fm')}.yaml", registries=regs))
    for section in ("data", "network", "eval"):
        assert ours[section] == fm[section], section
    for field in ("steps", "batch_size", "lr", "optimizer", "ema_decay", "seed"):
        assert ours["train"][field] == fm["train"][field], field
    assert ours["objective"]["name"] == "shortcut" and ours["flowmap"]["second_time"] == "stride"
