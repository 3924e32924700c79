"""fewstep.config: load_recipe, recipe_from_dict, recipe_dict's key order, dump_recipe round trips, recipe_schema."""
from __future__ import annotations

import json

import pytest
import yaml

from fewstep.config import COMPONENTS, dump_recipe, load_recipe, recipe_dict, recipe_from_dict, recipe_schema
from fewstep.errors import RecipeError

IMM = {"data": {"name": "moons", "noise": 0.1},
       "network": {"width": 16, "depth": 1, "name": "mlp"},  # name last on purpose
       "flowmap": {"parameterisation": "euler_fm"},
       "objective": {"group_size": 4, "kernel": {"eps": 1e-6, "name": "laplace"}, "name": "imm"},
       "train": {"steps": 10, "batch_size": 16, "lr": 1e-3},
       "eval": {"metrics": ["energy", {"n_projections": 8, "name": "sw2"}]}}


def _imm(regs):
    return recipe_from_dict(json.loads(json.dumps(IMM)), regs)


def test_load_recipe_applies_overrides_and_resolves_the_sampler(write, regs):
    path = write("r.yaml", yaml.safe_dump(IMM))
    r = load_recipe(path, ["train.lr=3e-4", "network.width=32", "objective.kernel=rbf"], regs)
    assert r.train.lr == 3e-4 and r.network.width == 32 and r.objective.kernel.name == "rbf"
    assert r.data.noise == 0.1 and r.train.steps == 10  # the rest from the file
    assert r.sampler.name == "pushforward" and r.sampler.mid_etas == [1.4]  # IMM's default sampler
    assert load_recipe(str(path), registries=regs).train.lr == 1e-3  # overrides are optional


def test_load_recipe_reports_every_problem_with_its_place(write, regs):
    path = write("bad.yaml", yaml.safe_dump({**IMM, "train": {"steps": 0, "lr": "fast"}}))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["network.depth=deep"], regs)
    lines = info.value.lines()
    assert len(lines) == 3 and all(line.startswith(str(path)) or "--set" in line for line in lines)
    joined = "\n".join(lines)
    assert "train.steps" in joined and "train.lr" in joined and "network.depth" in joined


def test_recipe_from_dict_validates_and_resolves_like_a_file(write, regs):
    from_dict = _imm(regs)
    from_file = load_recipe(write("r.yaml", yaml.safe_dump(IMM)), registries=regs)
    assert recipe_dict(from_dict) == recipe_dict(from_file)
    assert from_dict.sampler.name == "pushforward"


def test_recipe_from_dict_names_its_path_in_errors(regs):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({**IMM, "network": {"name": "mlp", "widht": 3}}, regs, path="bench.yaml entry fm")
    (line,) = info.value.lines()
    assert line.startswith("bench.yaml entry fm") and "network.widht: unknown field" in line
    with pytest.raises(RecipeError, match=r"<recipe>.* objective.name: unknown objective 'nope'"):
        recipe_from_dict({**IMM, "objective": {"name": "nope"}}, regs)


def test_recipe_from_dict_does_not_need_a_sampler_or_interpolant(regs):
    r = recipe_from_dict({"data": "moons", "network": "mlp", "objective": "fm"}, regs)
    assert r.interpolant.name == "ot_fm" and r.sampler.name == "euler"


def _name_first_everywhere(value, where="recipe"):
    """Every mapping that has a 'name' has it first; returns how many such mappings there are."""
    count = 0
    if isinstance(value, dict):
        if "name" in value and isinstance(value["name"], str):
            assert list(value)[0] == "name", f"{where}: {list(value)}"
            count += 1
        for k, v in value.items():
            count += _name_first_everywhere(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            count += _name_first_everywhere(v, f"{where}[{i}]")
    return count


def test_recipe_dict_puts_name_first_in_every_component(regs):
    data = recipe_dict(_imm(regs))
    # data, network, interpolant, objective, its two kernels, sampler, the two metrics and the jsonl logger
    assert _name_first_everywhere(data) == 10
    assert list(data["objective"]["kernel"]) == ["name", "eps"]
    assert [m["name"] for m in data["eval"]["metrics"]] == ["energy", "sw2"]
    assert data["eval"]["metrics"][1] == {"name": "sw2", "n_projections": 8}
    assert set(COMPONENTS) <= set(data)
    json.dumps(data)  # plain JSON values (it goes into config.json)


def test_recipe_dict_fills_in_every_default(regs):
    data = recipe_dict(_imm(regs))
    assert data["train"]["ema_decay"] == 0.9999 and data["flowmap"]["time_scale"] == 1000.0
    assert data["objective"]["k"] == 15 and data["interpolant"] == {"name": "ot_fm", "sigma_d": 0.5, "eps": 0.006,
                                                                     "T": 0.994}
    assert data["output"] == {"dir": "runs", "name": None}


def test_dump_recipe_with_provenance_round_trips(regs):
    recipe = _imm(regs)
    header = {"fewstep": "0.1.0", "git": "abc1234", "plugins": {"imm": "fewstep 0.1.0"}}
    text = dump_recipe(recipe, header)
    data = yaml.safe_load(text)
    assert list(data)[-1] == "_provenance" and data.pop("_provenance") == header
    assert list(data) == list(recipe_dict(recipe))  # sections keep their order
    assert text.startswith("data: {name: moons, ")  # name first in the text too
    again = recipe_from_dict(data, regs)
    assert recipe_dict(again) == recipe_dict(recipe)


def test_dump_recipe_without_a_header_has_no_provenance(regs):
    text = dump_recipe(_imm(regs))
    assert "_provenance" not in text
    assert yaml.safe_load(text) == recipe_dict(_imm(regs))
    assert "_provenance" not in yaml.safe_load(dump_recipe(_imm(regs), {}))  # an empty header adds nothing


def test_recipe_schema_describes_the_installed_components(regs):
    schema = recipe_schema(regs)
    json.dumps(schema)
    assert set(schema["properties"]) == {*COMPONENTS, "flowmap", "train", "eval", "output"}
    assert set(schema["required"]) == {"data", "network", "objective"}
    objectives = schema["properties"]["objective"]["anyOf"][1]["discriminator"]["mapping"]
    assert set(objectives) == set(regs.objectives.names())
    defs = schema["$defs"]
    assert "group_size" in defs["Objective_imm"]["properties"]
    assert defs["TrainConfig"]["properties"]["lr"]["default"] == 1e-4
