"""Run directories: ``<output.dir>/<name>/<timestamp>/`` with the resolved recipe and provenance;
finding the run to resume, and loading a trained run back."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from fewstep.config import dump_recipe, recipe_dict
from fewstep.config.recipe import PROVENANCE, resolve_sampler, validate
from fewstep.config.source import apply_overrides, load_yaml
from fewstep.errors import CheckpointError, ConfigError, RecipeError
from fewstep.files import write_text
from fewstep.run.checkpoint import checkpoint_dirs, checkpoint_step, latest_checkpoint, load_config, load_weights
from fewstep.run.components import Components, build_components, set_threads
from fewstep.version import __version__

# Recipe fields that may differ when a run is resumed, in two kinds:
# - bookkeeping, which does not change what is trained: the run's length (values derived from it,
#   such as CT's curriculum, are resolved once and kept in the run's state), the log, checkpoint and
#   sample intervals, how many checkpoints to keep, the spike report, the experiment loggers, and the output,
#   eval and sampler sections;
# - numerics (NUMERIC_CHANGES): the device, CPU threads, precision and torch.compile. The run continues
#   from its checkpoint, but not bit for bit as an uninterrupted run would (other kernels, other float
#   rounding; a switch to fp16 starts a fresh loss scale), and training says so when it resumes.
NUMERIC_CHANGES = {("train", "device"), ("train", "threads"), ("train", "precision"), ("train", "compile")}
SAMPLING_ONLY = {("eval",), ("sampler",), ("output",)}  # fields that leave the trained weights as they are
RESUMABLE_CHANGES = {("train", "steps"), ("train", "init"), ("train", "log_every"), ("train", "checkpoint_every"),
                     ("train", "keep_checkpoints"), ("train", "sample_every"), ("train", "spike_factor"),
                     ("train", "loggers"), *SAMPLING_ONLY, *NUMERIC_CHANGES}


def group_dir(recipe, recipe_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """``<output.dir>/<output.name or the recipe file's stem>``: where a recipe's runs go. When ``overrides``
    change the data set (``--set data.name=latents``), the group is ``<stem>-<data>``: runs on other data
    are not mixed with the recipe's own."""
    if recipe.output.name:
        return Path(recipe.output.dir) / recipe.output.name
    name = Path(recipe_path).stem if recipe_path else "run"
    if recipe_path and any(item.partition("=")[0].strip().split(".")[0] == "data" for item in overrides):
        own = load_yaml(recipe_path).data.get("data")
        if (own if isinstance(own, str) else (own or {}).get("name")) != recipe.data.name:
            name = f"{name}-{recipe.data.name}"
    return Path(recipe.output.dir) / name


def new_run_dir(group: Path) -> Path:
    """A fresh ``<group>/<timestamp>`` (suffixed -1, -2, ... when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = group / stamp
    i = 1
    while run.exists():
        run, i = group / f"{stamp}-{i}", i + 1
    return run


def run_started(run: Path) -> float:
    """When a run started (seconds since the epoch): its recipe's recorded ``started`` (kept across
    sessions), else when the recipe was written, else the time in a ``<stamp>[-k]`` folder name, else
    the folder's modification time."""
    from datetime import datetime

    try:
        meta = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")).get(PROVENANCE) or {}
        return datetime.fromisoformat(str(meta.get("started") or meta["written"])).timestamp()
    except (OSError, AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError):
        pass
    try:
        return datetime.strptime(run.name[:15], "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        return run.stat().st_mtime


def _newest_first(runs) -> list[Path]:
    """Run folders newest first by :func:`run_started`; runs of the same second by their ``-k`` suffix
    (``new_run_dir`` counts up, so ``-10`` is newer than ``-9``)."""
    def key(run: Path):
        k = run.name.rsplit("-", 1)[-1] if run.name.count("-") >= 2 else "0"
        return run_started(run), int(k) if k.isdigit() else 0, run.name

    return sorted(runs, key=key, reverse=True)


def recipe_diff(a: Any, b: Any, prefix: tuple = ()) -> list[tuple]:
    """Dotted paths where two resolved recipe dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k == PROVENANCE:
                continue
            out += recipe_diff(a.get(k), b.get(k), prefix + (k,))
        return out
    return [] if a == b else [prefix]


def _changes(run_dir: Path, recipe) -> list[tuple]:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return []
    return recipe_diff(load_config(ckpt).get("recipe", {}), recipe_dict(recipe))


def _within(path: tuple, prefixes) -> bool:
    return any(path[: len(p)] == p for p in prefixes)


def blocking_changes(run_dir: Path, recipe) -> list[str]:
    """Recipe fields that differ from the run's checkpoint in ways that forbid resuming."""
    return [".".join(map(str, d)) for d in _changes(run_dir, recipe) if not _within(d, RESUMABLE_CHANGES)]


def same_training(a, b) -> bool:
    """Whether recipes ``a`` and ``b`` train the same weights: they differ in sampling, eval and output only."""
    return all(_within(d, SAMPLING_ONLY) for d in recipe_diff(recipe_dict(a), recipe_dict(b)))


def numeric_changes(run_dir: Path, recipe) -> list[str]:
    """Fields that differ from the run's checkpoint and make the resumed run not bit-exact (NUMERIC_CHANGES)."""
    return [".".join(map(str, d)) for d in _changes(run_dir, recipe) if _within(d, NUMERIC_CHANGES)]


def is_finished(run_dir: Path) -> bool:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return False
    cfg = load_config(ckpt)
    return cfg["step"] >= cfg["recipe"]["train"]["steps"]


def _trained_runs(group: Path) -> list[Path]:
    """The group's runs that have a checkpoint, newest first."""
    if not group.is_dir():
        return []
    return [run for run in _newest_first(d for d in group.iterdir() if d.is_dir()) if latest_checkpoint(run)]


def find_resumable(group: Path, recipe) -> Path | None:
    """The newest unfinished run of this group whose recipe allows resuming (finished runs and runs
    trained otherwise are passed over), if any."""
    for run in _trained_runs(group):
        if not is_finished(run) and not blocking_changes(run, recipe):
            return run
    return None


def unfinished_other(group: Path, recipe) -> tuple[Path, list[str], int, int] | None:
    """(run, the fields that differ, its step, its length) when the group's newest trained run is
    unfinished and was trained with a recipe this one cannot resume: starting a new run beside it would
    leave it behind, so training asks first."""
    runs = _trained_runs(group)
    if not runs or is_finished(runs[0]):
        return None
    changed = blocking_changes(runs[0], recipe)
    if not changed:
        return None
    cfg = load_config(latest_checkpoint(runs[0]))
    return runs[0], changed, int(cfg["step"]), int(cfg["recipe"]["train"]["steps"])


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_recipe(run_dir: Path, recipe, regs) -> Path:
    """Save the resolved recipe with the fewstep version, plugin versions and git revision."""
    plugins = {p.name: f"{p.dist or p.module} {p.version or ''}".strip() for p in regs.plugins if p.status == "ok"}
    from datetime import datetime

    now = datetime.now()
    started = now.isoformat(sep=" ", timespec="microseconds")
    try:  # a resumed run keeps the time it started (what "newest" means for resume, eval and sample)
        old = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")).get(PROVENANCE) or {}
        started = str(old.get("started") or old.get("written") or started)
    except (OSError, AttributeError, yaml.YAMLError):
        pass
    header = {"fewstep": __version__, "git": git_revision(), "plugins": plugins, "started": started,
              "written": now.strftime("%Y-%m-%d %H:%M:%S")}
    return write_text(run_dir / "recipe.yaml", dump_recipe(recipe, header))


def resolve_run(path: str | Path) -> Path:
    """A run directory, or a group directory (its newest run with a checkpoint)."""
    p = Path(path)
    if (p / "recipe.yaml").exists():
        return p
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        raise CheckpointError(f"{p}: a recipe file, not a run; train it with `fewstep train {p}` and pass the run "
                              "directory it prints (or runs/<name> for the newest)")
    if p.is_dir():
        runs = _newest_first(d for d in p.iterdir() if (d / "recipe.yaml").exists())
        for run in runs:
            if latest_checkpoint(run) is not None:
                return run
        if runs:
            return runs[0]
    raise CheckpointError(f"{p}: not a run directory (no recipe.yaml); pass runs/<name>/<timestamp> "
                          "or runs/<name>")


# what may change about a trained run when it is evaluated or sampled (fewstep eval/sample --set)
AFTER_TRAINING = ("sampler", "eval")


def load_run_recipe(run_dir: Path, regs, overrides: list[str] | tuple[str, ...] = ()):
    """The validated recipe saved in a run directory, with ``overrides`` (``sampler.*`` and ``eval.*``
    only: what may change after training) applied."""
    path = run_dir / "recipe.yaml"
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.split(".")[0] not in AFTER_TRAINING:
            raise ConfigError(f"--set {item}: after training only the sampler and eval sections can change "
                              f"(sampler.<field>, eval.<field>); {key} is the trained run's")
    try:
        source = load_yaml(path)
    except RecipeError as exc:
        detail = exc.lines()[0].removeprefix(str(path)).lstrip(": ")
        raise CheckpointError(f"{path}: unreadable ({detail})") from None
    return resolve_sampler(validate(apply_overrides(source, list(overrides)), regs), regs)


def load_init(net, source: str | Path) -> Path:
    """``train.init``: put the EMA weights of the latest checkpoint of run ``source`` into ``net`` (a new run
    starts from them); returns that checkpoint. A network that does not match is a CheckpointError."""
    run = resolve_run(source)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise CheckpointError(f"train.init: {run} has no checkpoint to start from")
    load_weights(ckpt / "ema.safetensors", net)
    return ckpt


def load_run(path: str | Path, regs, device: str | None = None, use_ema: bool | None = None, *,
             checkpoint: int | None = None, overrides: list[str] | tuple[str, ...] = ()
             ) -> tuple[Path, Components, Any, int]:
    """Rebuild a run's components with the weights of a checkpoint (the latest, or the one at step
    ``checkpoint``), in eval mode; ``overrides`` change its sampler and eval sections.

    Returns (run_dir, components, flow map, checkpoint step); ``use_ema=None`` follows eval.use_ema.
    """
    run = resolve_run(path)
    recipe = load_run_recipe(run, regs, overrides)
    use_ema = recipe.eval.use_ema if use_ema is None else use_ema
    set_threads(recipe.train.threads)
    comps = build_components(recipe, regs, device or recipe.train.device, objective=False)
    ckpt = find_checkpoint(run, checkpoint)
    load_weights(ckpt / ("ema.safetensors" if use_ema else "model.safetensors"), comps.net)
    comps.net.eval()
    return run, comps, comps.flowmap, checkpoint_step(ckpt)


def find_checkpoint(run: Path, step: int | None = None) -> Path:
    """The run's latest checkpoint, or its checkpoint at ``step``; one line naming what there is otherwise."""
    dirs = checkpoint_dirs(run)
    if not dirs:
        raise CheckpointError(f"{run}: no checkpoint yet; train it first (fewstep train ...)")
    if step is None:
        return dirs[-1]
    for ckpt in dirs:
        if checkpoint_step(ckpt) == step:
            return ckpt
    kept = ", ".join(str(checkpoint_step(d)) for d in dirs)
    raise CheckpointError(f"{run}: no checkpoint at step {step} (kept: {kept}; train.keep_checkpoints sets how many)")
