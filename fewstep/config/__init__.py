"""Recipes: YAML files validated against the installed components.

>>> recipe = load_recipe("recipes/fm_toy.yaml", overrides=["train.lr=3e-4"])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fewstep.config.recipe import COMPONENTS, PROVENANCE, recipe_model, resolve_sampler, tagged, validate
from fewstep.config.source import Source, apply_overrides, load_yaml
from fewstep.registry import Registries

__all__ = ["COMPONENTS", "load_recipe", "recipe_from_dict", "recipe_dict", "dump_recipe",
           "recipe_schema", "tagged"]


def _regs(regs: Registries | None) -> Registries:
    if regs is None:
        from fewstep.plugins import get_registries

        regs = get_registries()
    return regs


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                registries: Registries | None = None):
    """Parse, override, validate and resolve a recipe file; problems raise one RecipeError."""
    regs = _regs(registries)
    source = apply_overrides(load_yaml(path), list(overrides))
    return resolve_sampler(validate(source, regs), regs)


def recipe_from_dict(data: dict[str, Any], registries: Registries | None = None, path: str = "<recipe>"):
    """Validate a recipe given as a dict (errors name ``path`` without line numbers)."""
    regs = _regs(registries)
    return resolve_sampler(validate(Source(path, data, None), regs), regs)


def recipe_dict(recipe) -> dict[str, Any]:
    """The resolved recipe, every default filled in, with ``name`` first in each component."""
    return _name_first(recipe.model_dump(mode="json"))


def _name_first(value: Any) -> Any:
    """Put ``name`` first in every component mapping (sections, metrics, nested references)."""
    if isinstance(value, list):
        return [_name_first(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {"name": value["name"]} if isinstance(value.get("name"), str) else {}
    out.update((k, _name_first(v)) for k, v in value.items() if k not in out)
    return out


def dump_recipe(recipe, header: dict[str, Any] | None = None) -> str:
    """YAML text of the resolved recipe, optionally with provenance keys under ``_provenance`` (PROVENANCE)."""
    data = recipe_dict(recipe)
    if header:
        data[PROVENANCE] = header
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def recipe_schema(registries: Registries | None = None) -> dict[str, Any]:
    """JSON Schema of recipes for the installed components (for editors and ``fewstep schema``)."""
    return recipe_model(_regs(registries)).model_json_schema()
