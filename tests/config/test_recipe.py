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
    assert problems(path, regs) == [f"{path}:6:3 network.widht: unknown field; did you mean 'width'?"]
    far = write("r.yaml", BASE.replace("  width: 32", "  width: 32\n  colour: red"))
    assert problems(far, regs) == [f"{far}:6:3 network.colour: unknown field"]  # nothing close: no guess


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
    assert "cannot read" in line


def test_schema_covers_installed_components(regs):
    schema = recipe_schema(regs)
    text = str(schema)
    assert "Objective_fm" in text and "minibatch_ot" in text and "Dataset_checkerboard" in text
    by_name, spec = schema["properties"]["data"]["anyOf"]  # a bare name, or the discriminated union
    assert "moons" in by_name["enum"] and spec["discriminator"]["propertyName"] == "name"


def test_set_reaches_into_a_component_given_by_its_bare_name(regs, write):
    from fewstep.config import load_recipe

    path = write("r.yaml", "data: moons\nnetwork: mlp\nobjective: {name: imm, kernel: laplace, group_size: 4}\n"
                           "train: {batch_size: 64}\n")
    r = load_recipe(path, ["objective.kernel.eps=1e-6", "data.noise=0.2"], regs)
    kernel = r.objective.kernel
    assert (kernel.name, kernel.eps, r.data.name, r.data.noise) == ("laplace", 1e-6, "moons", 0.2)


# --- values a field's maths cannot use ---------------------------------------------------------
@pytest.mark.parametrize("text, expect", [
    ("  steps: true", "train.steps: expected a number, not the boolean true"),
    ("  lr: .inf", "train.lr: input should be a finite number"),
    ("  lr: .nan", "train.lr: input should be a finite number"),
    ("  betas: [0.9, 1.0]", "train.betas.1: input should be less than 1"),
    ("  seed: -1", "train.seed: input should be greater than or equal to 0"),
    ("eval: {seed: 9223372036854775807}", "eval.seed: input should be less than or equal to 4611686018427387904"),
    ("eval: {steps: [1, true]}", "eval.steps.1: expected a number, not the boolean true"),
    ("sampler: {name: euler, schedule: eta, mid_etas: [0.0]}", "sampler.mid_etas.0: input should be greater than 0"),
    ("sampler: {name: euler, schedule: eta, mid_etas: [1.0, 1.0]}", "sampler.mid_etas: must be distinct"),
    ("sampler: {name: euler, schedule: eta, mid_etas: [200.0]}",
     "sampler.mid_etas: [200.0] outside (0.006036, 165.7), the eta range of interpolant ot_fm"),
])
def test_values_the_maths_cannot_use_are_one_line(write, regs, text, expect):
    key = text.split(":")[0] + ":"
    body = "".join(line for line in BASE.splitlines(keepends=True) if not line.startswith(key))
    path = write("r.yaml", body + text + "\n")
    [line] = problems(path, regs)
    assert expect in line and line.startswith(f"{path}:")


def test_mid_etas_are_checked_against_the_recipes_own_interpolant(write, regs):
    cosine = BASE + "interpolant: {name: vp_cosine, T: 0.9}\nsampler: {name: euler, schedule: eta, mid_etas: [7.0]}\n"
    [line] = problems(write("r.yaml", cosine), regs)
    assert "outside (0.009425, 6.314)" in line  # tan(pi * 0.006 / 2), tan(pi * 0.9 / 2)
    # the objective's default sampler is checked too: IMM's eta = 1.4 is beyond eta(T) for T = 0.55
    [line] = problems(write("i.yaml", BASE.replace("name: fm", "name: imm") + "interpolant: {T: 0.55}\n"), regs)
    assert "sampler.mid_etas: [1.4] outside" in line
    # other schedules ignore mid_etas
    assert load_recipe(write("u.yaml", BASE + "sampler: {name: euler, mid_etas: [500.0]}\n"), registries=regs)


def test_a_run_refuses_a_schedule_its_interpolant_cannot_give_before_writing(write, regs, tmp_path):
    """An interpolant whose Config gives no eta range is checked when the run is built."""
    from fewstep.errors import ConfigError
    from fewstep.interpolants import OTFM
    from fewstep.run.components import check_schedules
    from fewstep.samplers import Pushforward

    with pytest.raises(ConfigError, match="sampler: the 2-step schedule: mid_etas \\[500.0\\] must lie strictly"):
        check_schedules(Pushforward("eta", (500.0,)), OTFM(0.5), [1, 2, 4])
    check_schedules(Pushforward("eta", (500.0,)), OTFM(0.5), [1, 4])  # a 1.4-free grid is fine
