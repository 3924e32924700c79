"""Errors that the CLI turns into one clean line each.

Every error a user can cause (a bad recipe, flag, checkpoint or plugin) derives from
:class:`FewstepError`; ``exit_code`` is 2 for input the user must fix and 1 for a run that failed.
"""
from __future__ import annotations

import os


def debug() -> bool:
    """``FEWSTEP_DEBUG=1``: errors show their traceback instead of one clean line."""
    return os.environ.get("FEWSTEP_DEBUG", "") not in ("", "0")


class FewstepError(Exception):
    """Base class: its message is shown to the user as is, without a traceback."""

    exit_code = 1
    prefix = "error: "  # how the CLI starts each line that does not start with a file

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(FewstepError):
    """Input the user must fix: recipe, flag, checkpoint, plugin configuration (exit 2)."""

    exit_code = 2


class RecipeError(ConfigError):
    """One or more problems in a recipe, each already formatted as ``file:line:col path: message``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


class UnknownComponentError(ConfigError):
    """A recipe or flag names a component that no loaded plugin registered."""


class PluginError(ConfigError):
    """A plugin failed to load (strict mode) or two plugins registered one name."""


class MissingResource(ConfigError):
    """Data or weights that are not on this machine (a data set to fetch, weights to place): the message
    says which file goes where. Tests and the conformance kit skip on this error, and on no other."""


class CheckpointError(ConfigError):
    """A checkpoint or run directory is missing, corrupt or does not match the recipe."""


class TrainingDiverged(FewstepError):
    """The loss or a gradient became NaN/inf; the last good checkpoint is kept."""


class NonFiniteTangent(TrainingDiverged):
    """A forward-mode derivative of the flow map (``FlowMap.jvp``) came out NaN or inf; the message names
    the backbone layer where it first appeared (attention, a normalisation, the time embedding...)."""


class TrainingInterrupted(FewstepError):
    """SIGINT or SIGTERM during training: the step in progress was finished and a checkpoint written
    (exit 130, as a shell reports Ctrl-C). ``resume`` is the command that continues the run, when the
    caller knows it (the CLI does)."""

    exit_code = 130
    prefix = "stopped: "  # not a failure: the run is saved and resumes

    def __init__(self, run_dir, step: int, total: int, signal_name: str, resume: str | None = None):
        self.run_dir, self.step, self.total, self.signal_name, self.resume = run_dir, step, total, signal_name, resume
        super().__init__(self.lines()[0])

    def lines(self) -> list[str]:
        how = f"resume with: {self.resume}" if self.resume else "run the same command to resume"
        return [f"{self.signal_name} at step {self.step} of {self.total}: checkpoint written in {self.run_dir}; {how}"]
