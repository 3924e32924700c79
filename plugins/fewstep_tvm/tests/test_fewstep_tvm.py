"""The TVM plugin as fewstep sees it (fewstep_tvm/__init__.py): the Config's defaults against the official
configs, recipe checks as one-line errors, the default sampler, the conformance kit, the recipes."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.config import load_recipe, recipe_dict
from fewstep.testing import check_component
from fewstep_tvm import TVMConfig

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
RECIPE = ("data: eight_gaussians\nnetwork: mlp\ninterpolant: {name: ot_fm, eps: 0.0, T: 1.0}\n"
          "flowmap: {parameterisation: euler_fm, second_time: stride, time_scale: 1.0}\nobjective: tvm\n")


def test_defaults_are_the_official_configs():
    """[TVM] configs/im256_w2.yaml: loss s_P_mean -0.4, s_P_std 1, gap_P_mean -0.8, gap_P_std 1, label_dropout
    0.1; training ema_target_beta 0.99. Guidance 1 (learned guidance is not built)."""
    cfg = TVMConfig()
    assert (cfg.s_mean, cfg.s_std, cfg.gap_mean, cfg.gap_std) == (-0.4, 1.0, -0.8, 1.0)
    assert (cfg.label_dropout, cfg.target_ema_decay, cfg.guidance) == (0.1, 0.99, 1.0)
    assert not cfg.fused_pass and cfg.zero_nan_rows  # the official code's two passes


def test_config_refuses_unknown_fields_and_bad_values():
    with pytest.raises(ValueError):
        TVMConfig(cfg_scale=2.0)
    for bad in ({"gap_std": 0}, {"target_ema_decay": 1.0}, {"guidance": 0.5}, {"label_dropout": 1.0}):
        with pytest.raises(ValueError):
            TVMConfig(**bad)


def test_default_sampler_is_pushforward_on_a_uniform_grid(write, regs):
    d = recipe_dict(load_recipe(write("tvm.yaml", RECIPE), registries=regs))
    assert d["sampler"]["name"] == "pushforward" and d["sampler"]["schedule"] == "uniform"
    assert d["sampler"]["guidance"] == 1.0  # no runtime CFG: 1 NFE a step


@pytest.mark.parametrize("override, expect", [
    ("flowmap.parameterisation=simple_edm", "flowmap.parameterisation: TVM's map f = x_t + (s - t) k F is Euler-FM"),
    ("flowmap.second_time=none", "flowmap.second_time: TVM trains the two-time map"),
    ("objective={name: tvm, guidance: 2.0, label_dropout: 0.0}", "objective.guidance: a guided target (guidance "
                                                                 "2.0) needs the null class"),
    ("objective.gap_std=0", "objective.gap_std: input should be greater than 0"),
    ("objective.guidance=0.5", "objective.guidance: input should be greater than or equal to 1"),
])
def test_bad_configuration_is_one_line_exit_2(write, override, expect):
    res = CliRunner().invoke(app, ["check", str(write("tvm.yaml", RECIPE)), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert expect in lines[0], lines[0]


@pytest.mark.parametrize("options, sections", [
    ({}, {}),
    ({"fused_pass": True, "label_dropout": 0.0},
     {"flowmap": {"parameterisation": "euler_fm", "second_time": "stride", "time_scale": 1.0},
      "interpolant": {"name": "ot_fm", "eps": 0.0, "T": 1.0}}),
    ({"guidance": 2.0}, {"data": {"name": "digits", "conditional": True}}),
])
def test_conformance(regs, options, sections):
    check_component(regs.objectives.get("tvm"), options, **sections)


@pytest.mark.parametrize("name", ["tvm_toy", "tvm_digits"])
def test_recipes_compare_with_fm_at_the_same_budget(regs, name):
    """Data, network, training and evaluation of the FM recipe of the same data set: a head-to-head run (the toy
    recipe at a quarter of FM's batch, so that it trains in under 3 minutes; the benches set FM's). The
    interpolant range and the flow map's time inputs are TVM's: [0, 1], stride, raw t (docs/objectives.md §5.1)."""
    ours = recipe_dict(load_recipe(RECIPES / f"{name}.yaml", registries=regs))
    fm = recipe_dict(load_recipe(RECIPES / f"{name.replace('tvm', 'fm')}.yaml", registries=regs))
    if name == "tvm_toy":
        assert ours["train"]["batch_size"] * 4 == fm["train"]["batch_size"]
        ours["train"]["batch_size"] = fm["train"]["batch_size"]
    for section in ("data", "network", "train", "eval"):
        assert ours[section] == fm[section], section
    assert ours["objective"]["name"] == "tvm"
    assert ours["flowmap"] == {"parameterisation": "euler_fm", "second_time": "stride", "time_scale": 1.0}
    assert (ours["interpolant"]["eps"], ours["interpolant"]["T"]) == (0.0, 1.0)
    assert ours["sampler"]["name"] == "pushforward" and ours["sampler"]["schedule"] == "uniform"
