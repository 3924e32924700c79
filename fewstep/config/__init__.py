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
    """JSON Schema of recipes for the installed components (for editors and ``fewstep schema``).

    Beyond pydantic's schema of the Recipe model, it accepts what recipes write for short: a section,
    a metric or a logger by its bare name (``objective: fm``, ``metrics: [fid]``, ``loggers: [tensorboard]``),
    and a component reference inside a Config (an objective's ``kernel``) as a name or
    ``{name: ..., options}`` of that kind."""
    from pydantic import TypeAdapter

    from fewstep.config.recipe import _union
    from fewstep.registry import RefKind

    regs = _regs(registries)
    schema = recipe_model(regs).model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})

    def by_name(kind: str) -> dict[str, Any]:
        return {"type": "string", "enum": regs.kind(kind).names()}

    def either(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [by_name(kind), spec], **{k: spec[k] for k in ("description", "default") if k in spec}}

    for section, kind in COMPONENTS.items():
        if section in schema["properties"]:
            schema["properties"][section] = either(kind, schema["properties"][section])
    for model, field, kind in (("EvalConfig", "metrics", "metrics"), ("TrainConfig", "loggers", "loggers")):
        listed = defs[model]["properties"][field]
        listed["items"] = {"anyOf": [by_name(kind), listed["items"]]}
    for kind in {*COMPONENTS.values(), "metrics", "loggers"}:
        for entry in regs.kind(kind):
            cfg = tagged(entry)
            for field, info in cfg.model_fields.items():
                ref = next((m.kind for m in info.metadata if isinstance(m, RefKind)), None)
                if ref is None or cfg.__name__ not in defs:
                    continue
                union = TypeAdapter(_union(regs.kind(ref))).json_schema(ref_template="#/$defs/{model}")
                defs.update(union.pop("$defs", {}))
                prop = defs[cfg.__name__]["properties"]
                prop[field] = {"anyOf": [by_name(ref), union], "description": prop[field].get("description", "")}
    return schema
