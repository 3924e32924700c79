"""fewstep.errors: the exception hierarchy, exit codes, RecipeError's lines and FEWSTEP_DEBUG."""
from __future__ import annotations

import pytest

from fewstep import errors
from fewstep.errors import (
    CheckpointError,
    ConfigError,
    FewstepError,
    MissingResource,
    PluginError,
    RecipeError,
    TrainingDiverged,
    TrainingInterrupted,
    UnknownComponentError,
    debug,
)

USER_ERRORS = [ConfigError, RecipeError, UnknownComponentError, PluginError, MissingResource, CheckpointError]


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_input_the_user_must_fix_exits_with_2(cls):
    exc = cls(["x.yaml:1:1 a: b"]) if cls is RecipeError else cls("bad input")
    assert isinstance(exc, ConfigError) and isinstance(exc, FewstepError)
    assert exc.exit_code == 2


def test_a_failed_run_exits_with_1_and_is_not_a_config_error():
    exc = TrainingDiverged("loss is nan at step 3")
    assert exc.exit_code == 1 and FewstepError("x").exit_code == 1
    assert isinstance(exc, FewstepError) and not isinstance(exc, ConfigError)


def test_every_exception_class_of_the_module_derives_from_fewstep_error():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]
    assert set(classes) == {FewstepError, TrainingDiverged, errors.NonFiniteTangent, TrainingInterrupted, *USER_ERRORS}


def test_an_interrupted_run_exits_with_130_in_one_line_naming_the_run_and_how_to_resume():
    exc = TrainingInterrupted("runs/x/1", 120, 4000, "SIGTERM")
    assert exc.exit_code == 130 and not isinstance(exc, ConfigError)
    assert exc.lines() == ["SIGTERM at step 120 of 4000: checkpoint written in runs/x/1; run the same command to "
                           "resume"]
    exc.resume = "fewstep train r.yaml --run-dir runs/x/1"
    assert exc.lines() == ["SIGTERM at step 120 of 4000: checkpoint written in runs/x/1; resume with: fewstep train "
                           "r.yaml --run-dir runs/x/1"]


def test_missing_resource_is_caught_as_a_config_error():
    with pytest.raises(ConfigError, match="put weights.pth in /x"):
        raise MissingResource("put weights.pth in /x")


def test_recipe_error_keeps_one_line_per_problem():
    problems = ["r.yaml:5:3 network.width: input should be a valid integer",
                "r.yaml:7:3 objective.name: unknown objective 'fn'"]
    exc = RecipeError(problems)
    assert exc.lines() == problems
    assert str(exc) == "\n".join(problems)
    problems.append("added later")  # the error holds its own copy
    assert len(exc.lines()) == 2


def test_other_errors_are_one_line_of_their_message():
    assert ConfigError("train.device: 'tpu' is not a device").lines() == ["train.device: 'tpu' is not a device"]
    assert TrainingDiverged("loss is nan").lines() == ["loss is nan"]


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True),
                                                 ("yes", True), ("true", True)])
def test_debug_reads_fewstep_debug(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("FEWSTEP_DEBUG", raising=False)
    else:
        monkeypatch.setenv("FEWSTEP_DEBUG", value)
    assert debug() is expected
