"""The CT plugin's Config (fewstep_ct/__init__.py): the default sampler, the toy recipe, recipe checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.interpolants import OTFM
from fewstep_ct import MID_ETA

EPS = 0.006
RECIPE = "data: eight_gaussians\nnetwork: mlp\nobjective: ct\n"
RECIPES = Path(__file__).resolve().parents[3] / "recipes"

def test_default_sampler_is_restart_through_sigma_0_821(write, regs):
    from fewstep.config import load_recipe, recipe_dict

    recipe = load_recipe(write("ct.yaml", RECIPE), registries=regs)
    d = recipe_dict(recipe)
    assert d["sampler"] == {"name": "restart", "schedule": "eta", "mid_etas": [1.642], "rho": 7.0, "guidance": 1.0,
                            "sigma_max": 80.0}  # sampling starts where training ended
    ip = OTFM(0.5, EPS, 0.994)
    mid = torch.tensor([MID_ETA], dtype=torch.float64)
    assert ip.to_edm_sigma(ip.eta_inv(mid)).item() == pytest.approx(0.821, rel=1e-12)  # sigma = sigma_d eta
    assert ip.eta_inv(mid).item() == pytest.approx(0.62150, abs=1e-5)
    assert d["objective"]["mapping"] == "ict" and d["objective"]["s1"] == 1280


def test_toy_recipe_matches_fm_and_imm_except_objective_and_sampler(regs):
    from fewstep.config import load_recipe, recipe_dict

    dicts = [recipe_dict(load_recipe(RECIPES / f"{n}_toy.yaml", registries=regs)) for n in ("ct", "fm", "imm")]
    for section in ("data", "network", "interpolant", "flowmap", "train", "eval"):
        assert dicts[0][section] == dicts[1][section] == dicts[2][section], section
    assert dicts[0]["sampler"]["name"] == "restart" and dicts[0]["sampler"]["mid_etas"] == [1.642]


def test_a_resolved_recipe_validates_again(write, regs):
    from fewstep.config import load_recipe, recipe_dict, recipe_from_dict

    for mapping in ("ict", "ect"):
        d = recipe_dict(load_recipe(write("ct.yaml", RECIPE), [f"objective.mapping={mapping}"], regs))
        assert recipe_dict(recipe_from_dict(d, regs)) == d


@pytest.mark.parametrize("override, expect", [
    ("objective.s0=2000", "objective.s0: must not exceed s1 (got s0 2000, s1 1280)"),
    ("objective.sigma_min=90", "objective.sigma_min: must be below sigma_max (got 90.0, 80.0)"),
    ("objective={name: ct, distance: squared_l2, huber_c: 0.1}", "objective.huber_c: only used with distance"),
    ("objective.mapping=lcm", "objective.mapping: input should be 'ict' or 'ect'"),
    ("objective.p_std=0", "objective.p_std: input should be greater than 0"),
])
def test_bad_configuration_is_one_line_exit_2(write, override, expect):
    res = CliRunner().invoke(app, ["check", str(write("ct.yaml", RECIPE)), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert expect in lines[0], lines[0]
