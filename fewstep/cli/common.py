"""Shared CLI pieces: option aliases, the error wrapper, the stderr console."""
from __future__ import annotations

import functools
import sys
from typing import Annotated, Optional

import typer

from fewstep.errors import FewstepError, debug

RecipeArg = Annotated[str, typer.Argument(metavar="RECIPE", help="A recipe YAML file, e.g. recipes/fm_toy.yaml.")]
RunArg = Annotated[str, typer.Argument(
    metavar="RUN", help="A run directory (runs/<name>/<timestamp>) or runs/<name> for its newest run.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="PATH=VALUE", help="Override a recipe field, e.g. --set train.lr=3e-4 (repeatable).")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", metavar="DEVICE", help="cpu, cuda, cuda:1; default: the recipe's (auto).")]


def parse_steps(text: str) -> list[int]:
    """``1,2,4,8`` -> [1, 2, 4, 8]; anything else is a usage error."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated step counts such as 1,2,4,8 (got {text!r})",
                                 param_hint="--steps") from None
    if not steps or min(steps) < 1:
        raise typer.BadParameter(f"step counts must be positive (got {text!r})", param_hint="--steps")
    return steps


def clean_errors(fn):
    """Turn FewstepError into clean stderr lines and the right exit code, inside Typer's runner too."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewstepError as exc:
            if debug():
                raise
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
    return wrapper


def print_error(exc: FewstepError) -> None:
    """One line per problem on stderr; lines that start with a file location keep it first."""
    for line in exc.lines():
        print(line if _has_location(line) else f"error: {line}", file=sys.stderr)


_FILES = ("yaml", "yml", "json", "pt", "pth", "pkl", "safetensors")  # what fewstep reads: recipes, runs, checkpoints


def _has_location(line: str) -> bool:
    """Whether a line starts with a file (``x.yaml``, ``x.yaml:3:1``, ``.../ema.safetensors:``, ``ckpt.pt:``)."""
    head = line.split(" ", 1)[0]
    return head.endswith(tuple(f".{ext}" for ext in _FILES)) or any(f".{ext}:" in head for ext in _FILES)


def err(msg: str) -> None:
    print(msg, file=sys.stderr)
