"""``fewstep schema``: the JSON Schema of recipes."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from fewstep.config.source import load_yaml


def test_schema_is_json(cli):
    res = cli("schema")
    assert res.exit_code == 0 and "Objective_fm" in json.loads(res.stdout)["$defs"]


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator():
    from typer.testing import CliRunner

    from fewstep.cli import app

    schema = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", [p for p in RECIPES if "entries" not in p.read_text()], ids=lambda p: p.name)
def test_every_shipped_recipe_validates_against_the_schema(validator, path):
    """What an editor with the schema attached sees (the recipe read as fewstep reads it: YAML 1.2 floats)."""
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(load_yaml(path).data)]
    assert not errors, errors


@pytest.mark.parametrize("edit, where", [
    ({"train": {"lr": "fast"}}, ["train", "lr"]),
    ({"objective": {"name": "imm", "kernel": "gaussian"}}, ["objective"]),
    ({"objective": {"name": "imm", "kernel": {"name": "rbf", "bandwidth": 1}}}, ["objective"]),
    ({"eval": {"metrics": ["fid", "nosuch"]}}, ["eval", "metrics", 1]),
    ({"network": "resnet"}, ["network"]),
])
def test_the_schema_still_refuses_what_fewstep_refuses(validator, edit, where):
    data = load_yaml(RECIPES[0].parent / "imm_toy.yaml").data
    data.update(edit)
    paths = [list(e.path) for e in validator.iter_errors(data)]
    assert any(p[:len(where)] == where for p in paths), paths
