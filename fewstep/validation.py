"""The pydantic base of every component Config, recipe section and bench file model.

On top of pydantic's defaults it refuses what a recipe can say by accident and a run would take silently:

- unknown fields (a typo is an error, not an ignored key);
- a boolean where a number is expected (pydantic's lax mode reads ``steps: true`` as 1, and trains one
  step), also inside lists such as ``mid_etas: [true]``;
- ``.inf`` and ``.nan`` in float fields (no field of fewstep means anything by them).

Integral floats still pass for integers (``steps: 4e5`` is 400000), as in pydantic's lax mode.
This module imports no torch.
"""
from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["StrictModel", "error_message", "takes_numbers"]


def _is_number_type(tp: Any) -> bool:
    return tp in (int, float)


def _admits_bool(tp: Any) -> bool:
    """Whether ``tp`` accepts a boolean on purpose (bool, Any, or a union or literal holding one)."""
    if tp is bool or tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Annotated:
        return _admits_bool(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return any(_admits_bool(a) for a in get_args(tp))
    if origin is Literal:
        return any(isinstance(a, bool) for a in get_args(tp))
    return False


def takes_numbers(tp: Any) -> bool:
    """Whether a field of annotation ``tp`` expects a number (int, float, a numeric literal, an optional
    or constrained one) and does not also accept booleans."""
    if _admits_bool(tp):
        return False
    origin = get_origin(tp)
    if origin is Annotated:
        return takes_numbers(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return any(takes_numbers(a) for a in get_args(tp) if a is not type(None))
    if origin is Literal:
        return bool(get_args(tp)) and all(isinstance(a, (int, float)) for a in get_args(tp))
    return _is_number_type(tp)


def _element_type(tp: Any) -> Any:
    """The element annotation of list[X], tuple[X, ...], tuple[X, Y] (first), set[X]; None otherwise."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _element_type(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for a in get_args(tp):
            el = _element_type(a)
            if el is not None:
                return el
        return None
    if origin in (list, tuple, set, frozenset) and get_args(tp):
        return get_args(tp)[0]
    return None


def _boolean_errors(model: type[BaseModel], data: dict) -> list[InitErrorDetails]:
    """A boolean given to a field (or list element) of ``model`` that expects numbers, as pydantic errors."""
    out = []
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        if isinstance(value, bool) and takes_numbers(field.annotation):
            out.append(InitErrorDetails(type=PydanticCustomError(
                "bool_not_number", "expected a number, not the boolean {value}", {"value": str(value).lower()}),
                loc=(key,), input=value))
        elif isinstance(value, (list, tuple)):
            element = _element_type(field.annotation)
            if element is not None and takes_numbers(element):
                out += [InitErrorDetails(type=PydanticCustomError(
                    "bool_not_number", "expected a number, not the boolean {value}", {"value": str(v).lower()}),
                    loc=(key, i), input=v) for i, v in enumerate(value) if isinstance(v, bool)]
    return out


class StrictModel(BaseModel):
    """Unknown fields forbidden, values validated on assignment, no booleans for numbers, finite floats."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any, handler: Any) -> Any:
        # a model validator, not a field one: pydantic allows none on a component's ``name`` discriminator
        errors = _boolean_errors(cls, data) if isinstance(data, dict) else []
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(data)


def error_message(err: dict) -> str:
    """One pydantic error as the lower-case phrase fewstep prints after ``file:line:col field:``."""
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "field required"
    msg = err["msg"]
    if err["type"] == "value_error":  # a validator's ValueError: its own words, without pydantic's "Value error, "
        msg = str(err.get("ctx", {}).get("error", msg.removeprefix("Value error, ")))
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg
