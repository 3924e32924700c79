"""The strict pydantic base of every Config, recipe section and bench model: booleans are not numbers,
floats are finite, integral floats still count as integers."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import pytest
from pydantic import Field, PositiveFloat, ValidationError

from fewstep.validation import StrictModel, takes_numbers


class M(StrictModel):
    steps: int = 1
    lr: float = 1e-3
    maybe: Optional[int] = None
    size: Literal[8, 16] = 8
    bandwidth: Union[Literal["c_out"], PositiveFloat] = "c_out"
    flag: bool = False
    either: Union[bool, int] = 0
    anything: Any = None
    etas: list[Annotated[float, Field(gt=0)]] = [1.4]
    betas: tuple[float, float] = (0.9, 0.99)
    names: list[str] = []


def errors(**kw):
    with pytest.raises(ValidationError) as exc:
        M(**kw)
    return [(e["loc"], e["msg"]) for e in exc.value.errors()]


@pytest.mark.parametrize("field", ["steps", "lr", "maybe", "size", "bandwidth"])
def test_a_boolean_is_not_a_number(field):
    assert errors(**{field: True}) == [((field,), "expected a number, not the boolean true")]


def test_booleans_inside_number_lists_are_refused_with_their_index():
    assert errors(etas=[1.0, False]) == [(("etas", 1), "expected a number, not the boolean false")]
    assert errors(betas=[True, 0.9]) == [(("betas", 0), "expected a number, not the boolean true")]


def test_booleans_pass_where_they_are_meant():
    m = M(flag=True, either=True, anything=True, names=["a"])
    assert m.flag is True and m.either is True and m.anything is True


def test_integral_floats_are_integers_and_fractions_are_not():
    assert M(steps=4e5).steps == 400_000
    assert "fractional part" in errors(steps=1.5)[0][1]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_floats_must_be_finite(value):
    assert errors(lr=value) == [(("lr",), "Input should be a finite number")]


def test_assignment_is_validated_too():
    m = M()
    with pytest.raises(ValidationError):
        m.lr = float("nan")


def test_takes_numbers():
    assert takes_numbers(int) and takes_numbers(Optional[float]) and takes_numbers(Literal[8, 16])
    assert takes_numbers(Annotated[float, Field(gt=0)]) and takes_numbers(int | None)
    assert not takes_numbers(bool) and not takes_numbers(Union[bool, int]) and not takes_numbers(str)
    assert not takes_numbers(Literal["a"]) and not takes_numbers(Any) and not takes_numbers(list[int])
