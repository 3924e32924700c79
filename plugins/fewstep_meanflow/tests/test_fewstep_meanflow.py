"""The MeanFlow plugin's Config (fewstep_meanflow/__init__.py): defaults, recipe checks as one-line errors, the
recipes, and the conformance kit."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep_meanflow import MeanFlowConfig

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
RECIPE = ("data: eight_gaussians\nnetwork: mlp\ninterpolant: {name: ot_fm, eps: 0.0, T: 1.0}\n"
          "flowmap: {parameterisation: euler_fm, second_time: stride, time_scale: 1}\nobjective: meanflow\n")


def test_config_rejects_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        MeanFlowConfig(data_proportion=0.75)  # JAX's name, with the opposite meaning: refused, not guessed


def test_defaults_are_the_papers_cifar10_configuration():
    """py-meanflow scripts/cifar10_v0.sh ('used in paper'): P_mean/P_std -2.0/2.0 for t and r, ratio 0.75,
    norm_p 0.75, norm_eps 1e-3 (train_arg_parser default); unconditional: no dropout, no guidance."""
    cfg = MeanFlowConfig()
    assert (cfg.logit_mean_t, cfg.logit_std_t, cfg.logit_mean_r, cfg.logit_std_r) == (-2.0, 2.0, -2.0, 2.0)
    assert (cfg.share_r_neq_t, cfg.p, cfg.c) == (0.75, 0.75, 1e-3)
    guidance = (cfg.label_dropout, cfg.omega, cfg.kappa, cfg.t_start, cfg.t_end)
    assert guidance == (0.0, 1.0, 0.0, 0.0, 1.0) and cfg.fp32
    assert MeanFlowConfig.default_sampler == {"name": "pushforward", "schedule": "uniform"}


def test_a_recipe_without_sampler_gets_pushforward_uniform_and_validates_again(write, regs):
    from fewstep.config import load_recipe, recipe_dict, recipe_from_dict

    d = recipe_dict(load_recipe(write("mf.yaml", RECIPE), registries=regs))
    assert d["sampler"]["name"] == "pushforward" and d["sampler"]["schedule"] == "uniform"
    assert recipe_dict(recipe_from_dict(d, regs)) == d


@pytest.mark.parametrize("override, expect", [
    ("flowmap.parameterisation=simple_edm", "flowmap.parameterisation: MeanFlow's average velocity u = sigma_d G "
                                            "needs euler_fm (got simple_edm)"),
    ("flowmap.second_time=none", "flowmap.second_time: MeanFlow trains u(z_t, r, t): use stride"),
    ("objective={name: meanflow, t_start: 0.8, t_end: 0.3}", "objective.t_start: must not exceed t_end"),
    ("objective.omega=2", "objective.label_dropout: guidance in the target (omega != 1 or kappa != 0) uses the "
                          "null-class velocity, which is only trained with label_dropout > 0"),
    ("objective.kappa=1", "objective.kappa: input should be less than 1"),
    ("objective.share_r_neq_t=1.5", "objective.share_r_neq_t: input should be less than or equal to 1"),
    ("objective.c=0", "objective.c: input should be greater than 0"),
])
def test_bad_configuration_is_one_line_exit_2(write, override, expect):
    res = CliRunner().invoke(app, ["check", str(write("mf.yaml", RECIPE)), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert expect in lines[0], lines[0]


def test_another_interpolant_and_parameterisation_are_both_named(write):
    res = CliRunner().invoke(app, ["check", str(write("mf.yaml", RECIPE)), "--set", "interpolant.name=vp_cosine",
                                   "--set", "flowmap.parameterisation=simple_edm"])
    assert res.exit_code == 2, res.output
    assert "needs euler_fm (got simple_edm)" in res.output and "is ot_fm (got vp_cosine)" in res.output


@pytest.mark.parametrize("override", ["flowmap.second_time=s", "objective={name: meanflow, omega: 1.0, kappa: 0.5, "
                                                                "label_dropout: 0.1, t_start: 0.3, t_end: 0.8}"])
def test_second_time_s_and_the_imagenet_guidance_are_accepted(write, override):
    res = CliRunner().invoke(app, ["check", str(write("mf.yaml", RECIPE)), "--set", override])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name, peer, objective", [("meanflow_toy", "fm_toy", {"p": 0.0}),
                                                   ("meanflow_digits", "fm_digits", {})])
def test_recipes_match_fm_except_what_meanflow_needs(regs, name, peer, objective):
    from fewstep.config import load_recipe, recipe_dict

    mf, fm = (recipe_dict(load_recipe(RECIPES / f"{n}.yaml", registries=regs)) for n in (name, peer))
    for section in ("data", "network", "train", "eval"):
        assert mf[section] == fm[section], section
    assert mf["interpolant"] == {**fm["interpolant"], "eps": 0.0, "T": 1.0}
    assert mf["flowmap"] == {"parameterisation": "euler_fm", "second_time": "stride", "time_scale": 1.0}
    assert mf["objective"] == {"name": "meanflow", **MeanFlowConfig(**objective).model_dump()}
    assert (mf["sampler"]["name"], mf["sampler"]["schedule"]) == ("pushforward", "uniform")


@pytest.mark.parametrize("flowmap", [None, {"parameterisation": "euler_fm", "second_time": "stride", "time_scale": 1}])
def test_conformance(regs, flowmap):
    from fewstep.testing import check_objective

    sections = {} if flowmap is None else {"flowmap": flowmap}
    check_objective(regs.objectives.get("meanflow"), registries=regs, **sections)
