"""The IMM plugin's Config (fewstep_imm/__init__.py): recipe checks as one-line errors, resolved defaults."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fewstep.cli import app

RECIPE = "data: eight_gaussians\nnetwork: mlp\nobjective: {name: imm, group_size: 4, k: 10}\ntrain: {batch_size: 64}\n"

@pytest.mark.parametrize("override, expect", [
    ("objective.group_size=3", "objective.group_size: must divide each accumulation shard of train.batch_size "
                               "(got group_size 3, batch_size 64, accumulate 1)"),
    ("interpolant.T=0.006", "interpolant: eps must be smaller than T (got eps=0.006, T=0.006)"),
    ("objective.kernel=lapalce", "objective.kernel: unknown kernel 'lapalce'; did you mean 'laplace'?"),
    ("objective.kernel={name: laplace, eps: -1}", "objective.kernel.eps: input should be greater than 0"),
    ("objective.kernel.eps=1", "objective.kernel: give a registered name, or a mapping with 'name'"),
    ("objective.mapping=lambda", None),
    ("flowmap.second_time=none", "flowmap.second_time: IMM trains the two-time map"),
])
def test_bad_configuration_is_one_line_exit_2(write, override, expect):
    path = write("imm.yaml", RECIPE + ("interpolant: {name: ot_fm, eps: 0.0}\n" if "mapping" in override else ""))
    res = CliRunner().invoke(app, ["check", str(path), "--set", override])
    if expect is None:
        expect = "objective.mapping: 'lambda' needs interpolant.eps > 0"
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert expect in lines[0], lines[0]


def test_recipe_shows_the_resolved_kernel_and_defaults(write, regs):
    from fewstep.config import load_recipe, recipe_dict

    recipe = load_recipe(write("imm.yaml", RECIPE), registries=regs)
    d = recipe_dict(recipe)
    assert d["objective"]["kernel"] == {"name": "laplace", "eps": 1e-8}
    assert list(d["objective"]["kernel"])[0] == "name"
    assert d["sampler"] == {"name": "pushforward", "schedule": "eta", "mid_etas": [1.4], "rho": 7.0, "guidance": 1.0,
                            "sigma_max": None}
    assert d["objective"]["b"] == 5.0 and d["objective"]["k"] == 10  # Table 5 CIFAR-10 b; k from the recipe
