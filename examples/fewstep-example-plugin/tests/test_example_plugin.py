"""The plugin as fewstep sees it: discovery through the entry point, the conformance kit over its two
components, and its recipes, validated and trained for a few steps.

The package must be installed (``pip install -e examples/fewstep-example-plugin``): fewstep finds
plugins through the ``fewstep`` entry-point group, and so does the conformance kit.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import fewstep_example
from fewstep.api import train_recipe
from fewstep.config import load_recipe
from fewstep.plugins import load_registries
from fewstep.testing import check_component, conformance_cases

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PLUGIN = "example"  # the entry point's name in pyproject.toml: what Entry.plugin holds


def registries():
    """The installed plugins' registries (no FEWSTEP_PLUGINS from the environment)."""
    return load_registries(env={}, warn=False)


def test_found_through_the_entry_point_with_its_version():
    info = {p.name: p for p in registries().plugins}[PLUGIN]
    assert (info.status, info.source, info.module) == ("ok", "entry point", "fewstep_example")
    assert (info.dist, info.version) == ("fewstep-example-plugin", fewstep_example.__version__)
    assert info.provides == {"kernels": ["imq"], "samplers": ["midpoint"]}


def test_conformance_covers_both_components():
    ids = [case.id for case in conformance_cases(plugin=PLUGIN)]
    assert ids == ["kernels:imq", "samplers:midpoint"]


@pytest.mark.parametrize("entry", conformance_cases(plugin=PLUGIN))
def test_conformance(entry):
    check_component(entry)


@pytest.mark.parametrize("options", [{"c": 0.3, "beta": 2.0}])
def test_kernel_conforms_with_other_options(options):
    check_component(registries().kernels.get("imq"), options)


def test_recipes_validate_and_use_the_plugin():
    regs = registries()
    toy = load_recipe(RECIPES / "example_toy.yaml", registries=regs)
    assert (toy.objective.name, toy.sampler.name) == ("shortcut", "midpoint")
    imm = load_recipe(RECIPES / "imm_imq_toy.yaml", registries=regs)
    assert imm.objective.kernel.name == "imq" and imm.objective.kernel.c == 1.0


@pytest.mark.parametrize("recipe", ["example_toy.yaml", "imm_imq_toy.yaml"])
def test_recipe_trains_a_few_steps(recipe, tmp_path):
    overrides = ["train.steps=5", "train.batch_size=64", "train.checkpoint_every=5", "train.log_every=5",
                 f"output.dir={tmp_path}"]
    result = train_recipe(RECIPES / recipe, overrides, registries=registries(), progress=False)
    run = Path(result.run_dir)
    assert run.parent.parent == tmp_path
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 5 and records[-1]["loss"] > 0
    if recipe == "example_toy.yaml":
        assert {"fm", "self_consistency"} <= set(records[-1])
    assert (run / "checkpoints" / "step_0000005" / "model.safetensors").is_file()
    assert any((run / "samples").glob("*.png"))


def test_fewstep_plugins_lists_it_with_its_version():
    from typer.testing import CliRunner

    from fewstep.cli import app

    table = CliRunner().invoke(app, ["plugins"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "fewstep-example-plugin 0.1.0" in table.output
    listed = json.loads(CliRunner().invoke(app, ["plugins", "--json"]).output)
    (info,) = [p for p in listed["plugins"] if p["name"] == PLUGIN]
    assert (info["dist"], info["version"], info["status"]) == ("fewstep-example-plugin", "0.1.0", "ok")
