"""fewstep.cli.common: parse_steps, clean_errors (stderr lines, exit codes, FEWSTEP_DEBUG) and print_error."""
from __future__ import annotations

import pytest
import typer

from fewstep.cli.common import clean_errors, parse_steps, print_error
from fewstep.errors import CheckpointError, ConfigError, RecipeError, TrainingDiverged


@pytest.mark.parametrize(("text", "steps"), [("1,2,4,8", [1, 2, 4, 8]), ("16", [16]), (" 1, 2 ", [1, 2]),
                                             ("1,,2,", [1, 2]), ("4,1", [4, 1])])
def test_parse_steps(text, steps):
    assert parse_steps(text) == steps


@pytest.mark.parametrize(("text", "why"), [("", "must be positive"), (",", "must be positive"),
                                           ("0,1", "must be positive"), ("-2", "must be positive"),
                                           ("1;2", "comma-separated"), ("two", "comma-separated"),
                                           ("1.5", "comma-separated")])
def test_parse_steps_refuses_other_text_as_a_usage_error(text, why):
    with pytest.raises(typer.BadParameter, match=why) as info:
        parse_steps(text)
    assert "--steps" in info.value.format_message() and repr(text) in info.value.format_message()


def test_clean_errors_passes_results_and_names_through():
    @clean_errors
    def command(a, b=2):
        """Doc."""
        return a + b

    assert command(1, b=3) == 4
    assert command.__name__ == "command" and command.__doc__ == "Doc."  # typer reads both


@pytest.mark.parametrize(("exc", "code"), [(ConfigError("train.lr: bad"), 2), (CheckpointError("runs/x: gone"), 2),
                                           (TrainingDiverged("loss is nan at step 3"), 1)])
def test_clean_errors_turns_a_fewstep_error_into_lines_and_its_exit_code(exc, code, capsys, monkeypatch):
    monkeypatch.delenv("FEWSTEP_DEBUG", raising=False)

    @clean_errors
    def command():
        raise exc

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == code
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"error: {exc}\n"


def test_clean_errors_prints_one_line_per_recipe_problem(capsys, monkeypatch):
    monkeypatch.delenv("FEWSTEP_DEBUG", raising=False)
    problems = ["r.yaml:5:3 network.width: input should be a valid integer",
                "r.yaml:7:3 objective.name: unknown objective 'fn'"]

    @clean_errors
    def command():
        raise RecipeError(problems)

    with pytest.raises(typer.Exit):
        command()
    assert capsys.readouterr().err.splitlines() == problems


def test_clean_errors_reraises_under_fewstep_debug(capsys, monkeypatch):
    monkeypatch.setenv("FEWSTEP_DEBUG", "1")
    exc = ConfigError("train.lr: bad")

    @clean_errors
    def command():
        raise exc

    with pytest.raises(ConfigError) as info:
        command()
    assert info.value is exc and capsys.readouterr().err == ""


def test_clean_errors_lets_other_exceptions_through(monkeypatch):
    monkeypatch.delenv("FEWSTEP_DEBUG", raising=False)

    @clean_errors
    def command():
        raise ValueError("a bug, not bad input")

    with pytest.raises(ValueError, match="a bug"):
        command()


@pytest.mark.parametrize(("line", "shown"), [
    ("recipes/x.yaml:5:3 network.width: bad", "recipes/x.yaml:5:3 network.width: bad"),
    ("recipes/x.yml:1:1 data: bad", "recipes/x.yml:1:1 data: bad"),
    ("runs/a/recipe.yaml: unreadable", "runs/a/recipe.yaml: unreadable"),  # no line: the ':' ends the name
    ("bench.yaml entries.fm: bad", "bench.yaml entries.fm: bad"),
    ("runs/a/step_1/config.json: unreadable", "runs/a/step_1/config.json: unreadable"),
    ("bench.json entries: bad", "bench.json entries: bad"),
    ("train.device: 'tpu' is not a device", "error: train.device: 'tpu' is not a device"),
    ("runs/a/ema.safetensors: unreadable checkpoint", "runs/a/ema.safetensors: unreadable checkpoint"),
    ("cifar10.pt: refused to load", "cifar10.pt: refused to load"),
    ("the file yaml: is odd", "error: the file yaml: is odd"),
])
def test_print_error_keeps_file_locations_first(line, shown, capsys):
    print_error(ConfigError(line))
    assert capsys.readouterr().err == shown + "\n"
