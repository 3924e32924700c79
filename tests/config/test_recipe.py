"""Recipe loading: YAML 1.2 floats, line-accurate one-line errors, overrides, resolution, schema."""
from __future__ import annotations

import pytest

from fewstep.config import dump_recipe, load_recipe, recipe_dict, recipe_schema
from fewstep.errors import RecipeError

BASE = """\
data:
  name: eight_gaussians
network:
  name: mlp
  width: 32
objective:
  name: fm
train:
  lr: 1e-4
  steps: 10
"""


def problems(path, regs, overrides=()):
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, overrides, regs)
    return exc.value.problems


def test_scientific_notation_is_a_float(write, regs):
    r = load_recipe(write("r.yaml", BASE), registries=regs)
    assert isinstance(r.train.lr, float) and r.train.lr == 1e-4


def test_defaults_are_resolved_and_sampler_comes_from_the_objective(write, regs):
    r = load_recipe(write("r.yaml", BASE), registries=regs)
    assert r.interpolant.name == "ot_fm" and r.interpolant.sigma_d == 0.5
    assert r.sampler.name == "euler"  # FM's default sampler
    data = recipe_dict(r)
    assert list(data["objective"])[0] == "name" and data["network"]["depth"] == 4
    assert "lr: 0.0001" in dump_recipe(r)
    assert recipe_dict(load_recipe(write("again.yaml", dump_recipe(r)), registries=regs)) == data  # round trip


def test_wrong_type_gives_file_line_col_and_path(write, regs):
    path = write("r.yaml", BASE.replace("width: 32", "width: wide"))
    [line] = problems(path, regs)
    assert line.startswith(f"{path}:5:3 network.width: input should be a valid integer")


def test_unknown_objective_lists_known_names_and_closest(write, regs):
    path = write("r.yaml", BASE.replace("name: fm", "name: fn"))
    [line] = problems(path, regs)
    assert line.startswith(f"{path}:7:3 objective.name: unknown objective 'fn'; did you mean 'fm'?")
    known = line.split("(known: ")[1].rstrip(")").split(", ")
    assert "fm" in known and known == sorted(known)


def test_yaml_syntax_error_names_line_and_column(write, regs):
    path = write("r.yaml", "data: {name: eight_gaussians\nnetwork: mlp\n")
    [line] = problems(path, regs)
    assert line.startswith(f"{path}:2:") and "YAML syntax error" in line


def test_unknown_field_of_a_component_is_rejected(write, regs):
    path = write("r.yaml", BASE.replace("  width: 32", "  width: 32\n  widht: 64"))
    assert problems(path, regs) == [f"{path}:6:3 network.widht: unknown field"]


def test_every_problem_is_reported_one_line_each(write, regs):
    text = BASE.replace("width: 32", "width: -1").replace("steps: 10", "steps: 0").replace("lr: 1e-4", "lr: x")
    lines = problems(write("r.yaml", text), regs)
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert [line.split(" ")[1] for line in lines] == ["network.width:", "train.steps:", "train.lr:"]


def test_missing_section(write, regs):
    path = write("r.yaml", "network: mlp\nobjective: fm\n")
    assert problems(path, regs) == [f"{path} data: field required"]


def test_overrides_apply_and_errors_name_the_flag(write, regs):
    path = write("r.yaml", BASE)
    r = load_recipe(path, ["train.lr=3e-4", "objective.minibatch_ot=true", "eval.steps=[1, 3]"], regs)
    assert (r.train.lr, r.objective.minibatch_ot, r.eval.steps) == (3e-4, True, [1, 3])
    [line] = problems(path, regs, ["train.batch_size=big"])
    assert line.startswith(f"{path} (--set train.batch_size=big) train.batch_size: ")
    [line] = problems(path, regs, ["train.lr"])
    assert "expected dotted.path=value" in line


def test_cross_section_check(write, regs):
    path = write("r.yaml", BASE + "interpolant: {name: vp_cosine}\nflowmap:\n  parameterisation: euler_fm\n")
    [line] = problems(path, regs)
    assert line.startswith(f"{path}:13:3 flowmap.parameterisation: euler_fm needs the ot_fm interpolant")


def test_interpolant_range_is_validated(write, regs):
    path = write("r.yaml", BASE + "interpolant: {name: ot_fm, eps: 0.5, T: 0.4}\n")
    [line] = problems(path, regs)
    assert line.startswith(f"{path}:11:") and "eps must be smaller than T" in line


def test_missing_file(regs, tmp_path):
    [line] = problems(tmp_path / "nope.yaml", regs)
    assert "cannot read recipe" in line


def test_schema_covers_installed_components(regs):
    schema = recipe_schema(regs)
    text = str(schema)
    assert "Objective_fm" in text and "minibatch_ot" in text and "Dataset_checkerboard" in text
    assert schema["properties"]["data"]["discriminator"]["propertyName"] == "name"


def test_set_reaches_into_a_component_given_by_its_bare_name(regs, write):
    from fewstep.config import load_recipe

    path = write("r.yaml", "data: moons\nnetwork: mlp\nobjective: {name: imm, kernel: laplace, group_size: 4}\n"
                           "train: {batch_size: 64}\n")
    r = load_recipe(path, ["objective.kernel.eps=1e-6", "data.noise=0.2"], regs)
    assert (r.objective.kernel.name, r.objective.kernel.eps, r.data.name, r.data.noise) == ("laplace", 1e-6, "moons", 0.2)
