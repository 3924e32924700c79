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
DataSetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="data.FIELD=VALUE", help="Set a field of the data set, e.g. --set data.root=/data/imagenet/train "
                                              "(repeatable).")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", metavar="DEVICE", help="cpu, cuda, cuda:1; default: the recipe's (auto).")]
AfterSetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="PATH=VALUE", help="Change the run's sampler or eval settings, e.g. --set "
                                        "sampler.schedule=uniform or --set eval.n_samples=10000 (repeatable).")]
CheckpointOpt = Annotated[Optional[int], typer.Option(
    "--checkpoint", metavar="STEP", min=0, help="A kept checkpoint by its step; default: the latest.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", metavar="ema|online", help="The EMA of the weights or the trained weights; default: the recipe's "
                                            "eval.use_ema (EMA).")]


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
        print(line if _has_location(line) else f"{exc.prefix}{line}", file=sys.stderr)


_FILES = ("yaml", "yml", "json", "pt", "pth", "pkl", "safetensors")  # what fewstep reads: recipes, runs, checkpoints


def _has_location(line: str) -> bool:
    """Whether a line starts with a file (``x.yaml``, ``x.yaml:3:1``, ``.../ema.safetensors:``, ``ckpt.pt:``)."""
    head = line.split(" ", 1)[0]
    return head.endswith(tuple(f".{ext}" for ext in _FILES)) or any(f".{ext}:" in head for ext in _FILES)


def err(msg: str) -> None:
    print(msg, file=sys.stderr)


def image_source_from_flags(data: str, set_: list[str] | None):
    """(data set, its validated Config) for ``--data NAME --set data.<field>=value ...`` (``fewstep encode``,
    ``fewstep fid-ref``): a data set with original images to read one by one; a folder is streamed, never
    held in memory. Every bad flag is one line named by the flag."""
    from pydantic import ValidationError

    from fewstep.config.source import parse_scalar
    from fewstep.errors import ConfigError, RecipeError
    from fewstep.plugins import get_registries
    from fewstep.protocols import StoredImages
    from fewstep.validation import error_message

    spec = {"name": data}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("data."):
            raise ConfigError(f"--set {item}: takes data.<field>=value")
        spec[key[5:]] = parse_scalar(raw, f"--set {item}")
    entry = get_registries().datasets.get(data)
    model = entry.model()
    if "stream" in model.model_fields:  # a folder is read image by image, never held in memory here
        spec.setdefault("stream", True)
    try:
        cfg = model.model_validate(spec)
    except ValidationError as exc:  # one line per problem, named by its flag
        raise RecipeError([f"--set data.{'.'.join(map(str, e['loc']))}: {error_message(e)}" if e["loc"] else
                           f"--data {data}: {error_message(e)}" for e in exc.errors(include_url=False)]) from None
    ds = entry.build(cfg, 0.5)
    if not isinstance(ds, StoredImages):
        raise ConfigError(f"--data {data}: has no original images to read (kind {ds.kind})")
    return ds, cfg


def default_workers() -> int:
    """DataLoader processes for reading images: min(4, the CPU cores this process may use)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cores)


class ProgressBar:
    """Progress of a long read (encode, fid-ref) on rank 0: a rich bar on a terminal, otherwise a plain line
    every 30 s and at the end. Called as ``bar(done, total, **fields)``."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar, self.last = label, enabled, None, 0.0

    def __call__(self, done: int, total: int, **fields: float) -> None:
        import time

        from fewstep.train.progress import Progress

        if not self.enabled:
            return
        if self.bar is None:
            self.bar = Progress(total, 0, self.label)
        now = time.monotonic()
        if sys.stderr.isatty() or now - self.last >= 30 or done == total:
            self.last = now
            self.bar.status(done, fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
