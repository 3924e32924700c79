"""Run directories: ``<output.dir>/<name>/<timestamp>/`` with the resolved recipe and provenance."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from fewstep import __version__
from fewstep.config import dump_recipe, recipe_dict, recipe_from_dict
from fewstep.errors import CheckpointError
from fewstep.train.checkpoint import latest_checkpoint, load_config

# Fields that may change between a run and its resumption (they do not change what is trained).
RESUMABLE_CHANGES = {("train", "steps"), ("train", "log_every"), ("train", "checkpoint_every"),
                     ("train", "keep_checkpoints"), ("train", "sample_every"), ("train", "device"),
                     ("train", "threads"), ("train", "precision"), ("train", "compile"), ("output",), ("eval",), ("sampler",)}


def group_dir(recipe, recipe_path: str | Path | None) -> Path:
    name = recipe.output.name or (Path(recipe_path).stem if recipe_path else "run")
    return Path(recipe.output.dir) / name


def new_run_dir(group: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = group / stamp
    i = 1
    while run.exists():
        run, i = group / f"{stamp}-{i}", i + 1
    return run


def recipe_diff(a: Any, b: Any, prefix: tuple = ()) -> list[tuple]:
    """Dotted paths where two resolved recipe dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k == "_provenance":
                continue
            out += recipe_diff(a.get(k), b.get(k), prefix + (k,))
        return out
    return [] if a == b else [prefix]


def blocking_changes(run_dir: Path, recipe) -> list[str]:
    """Recipe fields that differ from the run's checkpoint in ways that forbid resuming."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return []
    old = load_config(ckpt).get("recipe", {})
    diffs = recipe_diff(old, recipe_dict(recipe))
    return [".".join(map(str, d)) for d in diffs
            if not any(d[: len(r)] == r for r in RESUMABLE_CHANGES)]


def is_finished(run_dir: Path) -> bool:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return False
    cfg = load_config(ckpt)
    return cfg["step"] >= cfg["recipe"]["train"]["steps"]


def find_resumable(group: Path, recipe) -> Path | None:
    """The newest unfinished run of this group whose recipe allows resuming, if any."""
    if not group.is_dir():
        return None
    for run in sorted((d for d in group.iterdir() if d.is_dir()), reverse=True):
        if latest_checkpoint(run) is None:
            continue
        if not is_finished(run) and not blocking_changes(run, recipe):
            return run
        return None  # only the newest run with a checkpoint is a candidate
    return None


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_recipe(run_dir: Path, recipe, regs) -> Path:
    """Save the resolved recipe with the fewstep version, plugin versions and git revision."""
    run_dir.mkdir(parents=True, exist_ok=True)
    plugins = {p.name: f"{p.dist or p.module} {p.version or ''}".strip() for p in regs.plugins if p.status == "ok"}
    header = {"fewstep": __version__, "git": git_revision(), "plugins": plugins,
              "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = run_dir / "recipe.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump_recipe(recipe, header))
    tmp.replace(path)
    return path


def resolve_run(path: str | Path) -> Path:
    """A run directory, or a group directory (its newest run with a checkpoint)."""
    p = Path(path)
    if (p / "recipe.yaml").exists():
        return p
    if p.is_dir():
        runs = sorted((d for d in p.iterdir() if (d / "recipe.yaml").exists()), reverse=True)
        for run in runs:
            if latest_checkpoint(run) is not None:
                return run
        if runs:
            return runs[0]
    raise CheckpointError(f"{p}: not a run directory (no recipe.yaml); pass runs/<name>/<timestamp> "
                          "or runs/<name>")


def load_run_recipe(run_dir: Path, regs):
    path = run_dir / "recipe.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    data.pop("_provenance", None)
    return recipe_from_dict(data, regs, path=str(path))
