"""The Recipe: one YAML file is one experiment, validated by pydantic against the installed plugins.

Sections: ``data``, ``network``, ``interpolant``, ``objective``, ``sampler`` (components chosen by
``name`` and checked by that component's own Config, unknown fields forbidden), and the core's
``flowmap``, ``train``, ``eval`` and ``output``. The model is built at run time from the
registries, as a discriminated union on ``name`` per component section.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, create_model, model_validator

from fewstep.errors import RecipeError
from fewstep.protocols import ChecksRecipe, HasDefaultSampler, NamesResources
from fewstep.registry import Entry, Registries, Registry, ref_fields
from fewstep.validation import StrictModel, error_message

# Recipe section -> registry kind
COMPONENTS = {
    "data": "datasets",
    "network": "networks",
    "interpolant": "interpolants",
    "objective": "objectives",
    "sampler": "samplers",
}


PROVENANCE = "_provenance"  # the key of a saved recipe's versions, revision and times (not a setting)

# Sections that may be left out, and the component they then default to.
DEFAULT_NAMES = {"interpolant": "ot_fm"}


Beta = Annotated[float, Field(ge=0, lt=1)]
MAX_SEED = 2**62  # torch takes seeds below 2^64; offsets (seed + 4, + 104729 rank) must stay below it


class Section(StrictModel):
    """A core recipe section (flowmap, train, eval, output): strict like every component Config."""


class FlowMapConfig(Section):
    """How the network becomes the flow map f(x_t, s, t) (IMM §4.2, App. I.1)."""

    parameterisation: Literal["identity", "simple_edm", "euler_fm"] = Field(
        "simple_edm", description="g/f coefficients (IMM Table 5: simple_edm for CIFAR-10, euler_fm for ImageNet).")
    second_time: Literal["none", "s", "stride"] = Field(
        "s", description="Second time input: none, s, or the stride t - s (IMM Table 5: s; DiT-XL headline: stride).")
    time_scale: float = Field(1000.0, gt=0, description="c in c_noise(t) = c t (IMM Table 5: 1000).")


class TrainConfig(Section):
    """The training loop. Defaults are IMM's CIFAR-10 column of Table 5 where the paper gives one."""

    steps: int = Field(400_000, ge=1, description="Optimiser steps (IMM Table 5 CIFAR-10: 400K).")
    batch_size: int = Field(4096, ge=1, description="Global batch size (IMM Table 5: 4096).")
    optimizer: Literal["adam", "adamw", "radam"] = Field("radam", description="IMM Table 5 CIFAR-10: RAdam.")
    lr: float = Field(1e-4, gt=0, description="Learning rate after warm-up (IMM Table 5: 1e-4).")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="Adam betas, each in [0, 1) (IMM Table 5).")
    adam_eps: float = Field(1e-8, gt=0, description="Adam epsilon (IMM Table 5).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (IMM Table 5: 0).")
    warmup_steps: int = Field(0, ge=0, description="Linear lr warm-up steps (not stated by IMM: 0).")
    grad_clip: Optional[float] = Field(
        None, gt=0, description="Clip the global grad norm; null = off (not stated by IMM).")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="EMA decay of the evaluation weights (IMM Table 5).")
    accumulate: int = Field(1, ge=1, description="Gradient accumulation: each process runs this many shards of its "
                                                  "share of batch_size per optimiser step.")
    micro_batch: Optional[int] = Field(
        None, ge=1, description="Samples per forward pass on one device; the accumulation steps follow from it and "
                                "the number of processes, batch_size / (processes x micro_batch), and the optimiser "
                                "steps are those of any other split (IMM's batch of 4096 fits no single GPU). null: "
                                "use accumulate.")
    compile: bool = Field(False, description="torch.compile the network for training (the first steps wait for the "
                                             "compiler; a GPU and long runs gain most).")
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = Field(
        "tf32", description="tf32: TensorFloat-32 matmuls on CUDA (IMM Table 5; fp32 on a CPU); bf16/fp16: autocast "
                            "forwards, fp16 with loss scaling (IMM App. I.6: fp16 for the DiT-XL headline).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Every random stream derives from (seed, rank, step).")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    threads: Optional[int] = Field(
        1, ge=1, description="torch CPU threads; on a loaded 2-core machine 1 can be 5-70x faster than 2.")
    log_every: int = Field(100, ge=1, description="Steps between metrics.jsonl records and status lines.")
    spike_factor: Optional[float] = Field(
        10.0, gt=1, description="Report a step whose loss exceeds this many times its running mean (a line with "
                                "the step, and loss_spikes in metrics.jsonl); null = off. The run goes on.")
    checkpoint_every: int = Field(1000, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="How many recent checkpoints to keep.")
    sample_every: Optional[int] = Field(None, ge=1, description="Steps between sample PNGs; null = only at the end.")

    @model_validator(mode="after")
    def _micro_batch(self):
        if self.micro_batch is not None:
            if self.accumulate != 1:
                raise ValueError("set micro_batch or accumulate, not both (micro_batch derives the accumulation steps)")
            if self.batch_size % self.micro_batch:
                raise ValueError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")
        return self

    def split(self, processes: int) -> tuple[int, int]:
        """(accumulation steps, samples per pass) of one process among ``processes``; a ConfigError-worthy
        ValueError when the batch does not split."""
        acc = self.batch_size // (processes * self.micro_batch) if self.micro_batch else self.accumulate
        if acc < 1 or self.batch_size % (processes * acc):
            raise ValueError(f"train.batch_size: {self.batch_size} does not split into {processes} process(es) x "
                             f"{max(acc, 1)} accumulation step(s)"
                             + (f" of micro_batch {self.micro_batch}" if self.micro_batch else ""))
        return acc, self.batch_size // (processes * acc)
    init: Optional[str] = Field(
        None, description="Start a new run from another run's EMA weights: its directory (runs/<name>/<timestamp>, or "
                          "runs/<name> for the newest), e.g. one made by fewstep import-checkpoint; null = random "
                          "initialisation. A resumed run continues from its own checkpoint.")


class EvalBase(Section):
    """Base of the eval section (its metrics field is built from the registries in :func:`recipe_model`)."""

    def step_counts(self, steps: list[int] | None = None) -> list[int]:
        """``steps`` (default ``eval.steps``) followed by ``reference_steps`` when set, without repeats."""
        ref = [self.reference_steps] if self.reference_steps else []
        return list(dict.fromkeys([*(steps or self.steps), *ref]))


def _metric_list(v: Any) -> Any:
    if isinstance(v, (str, dict)):
        v = [v]
    if isinstance(v, list):
        return [{"name": m} if isinstance(m, str) else m for m in v]
    return v


class OutputConfig(Section):
    dir: str = Field("runs", description="Runs go to <dir>/<name>/<timestamp>/.")
    name: Optional[str] = Field(None, description="Run group name; null = the recipe file's stem.")


def tagged(entry: Entry) -> type[BaseModel]:
    """The entry's Config with a ``name: Literal[entry.name]`` field, for the discriminated union."""
    return entry.model()


def _union(reg: Registry) -> Any:
    models = [tagged(e) for e in reg]
    if not models:
        return dict  # nothing registered: the pre-check reports the name as unknown
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="name")]


def recipe_model(regs: Registries) -> type[BaseModel]:
    """Build the Recipe model for the installed components."""
    default_ip = regs.interpolants.entries.get(DEFAULT_NAMES["interpolant"])
    eval_model = create_model(
        "EvalConfig",
        __base__=EvalBase,
        steps=(list[Annotated[int, Field(ge=1)]], Field([1, 2, 4, 8], description="Step counts to evaluate.")),
        reference_steps=(Optional[int], Field(
            64, ge=1, description="Also evaluate this many steps as a reference; null = off.")),
        n_samples=(int, Field(4096, ge=2, description="Samples per step count (and fresh data per comparison).")),
        batch_size=(int, Field(4096, ge=1, description="Sampling batch size.")),
        metrics=(Annotated[list[_union(regs.metrics)], BeforeValidator(_metric_list)],
                 Field(default_factory=lambda: [{"name": n} for n in ("sw2", "mmd", "energy") if n in regs.metrics],
                       validate_default=True, description="Metrics by name, or {name: ..., options}.")),
        seed=(int, Field(1234, ge=0, le=MAX_SEED, description="Seed of the sampling noise and of the fresh data.")),
        use_ema=(bool, Field(True, description="Evaluate the EMA weights (IMM evaluates EMA).")),
    )
    train_model = create_model(
        "TrainConfig",
        __base__=TrainConfig,
        loggers=(Annotated[list[_union(regs.loggers)], BeforeValidator(_metric_list)],
                 Field(default_factory=lambda: [{"name": n} for n in ("jsonl",) if n in regs.loggers],
                       validate_default=True,
                       description="Experiment loggers by name or {name: ..., options}: jsonl (metrics.jsonl, always "
                                   "on), tensorboard, wandb (`fewstep plugins` lists those installed).")),
    )
    fields: dict[str, Any] = {
        "data": (_union(regs.datasets), Field(description="The dataset (by name)")),
        "network": (_union(regs.networks), Field(description="The backbone (by name)")),
        "interpolant": (
            _union(regs.interpolants),
            Field(default_factory=(lambda: tagged(default_ip)(name=DEFAULT_NAMES["interpolant"]))
                  if default_ip else None, description="The interpolant (by name); default ot_fm"),
        ),
        "objective": (_union(regs.objectives), Field(description="The training objective (by name)")),
        "sampler": (Optional[_union(regs.samplers)],
                    Field(None, description="The sampler; null = the objective's default")),
        "flowmap": (FlowMapConfig, Field(default_factory=FlowMapConfig)),
        "train": (train_model, Field(default_factory=train_model)),
        "eval": (eval_model, Field(default_factory=eval_model)),
        "output": (OutputConfig, Field(default_factory=OutputConfig)),
    }
    return create_model("Recipe", __base__=Section, **fields)


def validate(source, regs: Registries):
    """Validate parsed recipe data: pre-check component names, pydantic, then cross-checks. A run's saved
    ``recipe.yaml`` validates too: its ``_provenance`` (versions, revision, times) is not a setting."""
    data = source.data
    if isinstance(data, dict):
        data.pop(PROVENANCE, None)
        if "entries" in data and "objective" not in data:
            raise RecipeError([f"{source.path}: a bench file (it has entries), not a recipe; run it with "
                               f"`fewstep bench {source.path}`"])
    problems: list[str] = []
    bad_sections = set()
    for section, kind in COMPONENTS.items():
        spec = data.get(section)
        if isinstance(spec, str):  # "objective: fm" is short for {name: fm}
            spec = data[section] = {"name": spec}
        if isinstance(spec, dict) and "name" not in spec:
            if section in DEFAULT_NAMES and DEFAULT_NAMES[section] in regs.kind(kind):
                spec["name"] = DEFAULT_NAMES[section]  # e.g. only `--set interpolant.T=...` given
            else:
                where, _ = source.locate((section,))
                problems.append(f"{where} {section}.name: field required "
                                f"(known: {', '.join(regs.kind(kind).names()) or 'none'})")
                bad_sections.add(section)
        elif isinstance(spec, dict) and spec["name"] not in regs.kind(kind):
            where, _ = source.locate((section, "name"))
            problems.append(f"{where} {section}.name: {regs.kind(kind).unknown_message(spec['name'])}")
            bad_sections.add(section)
    try:
        recipe = recipe_model(regs).model_validate(data)
    except ValidationError as exc:
        recipe = None
        for err in exc.errors(include_url=False):
            if err["loc"] and err["loc"][0] in bad_sections:
                continue
            where, loc = source.locate(err["loc"])
            message = error_message(err)
            if err["type"] == "extra_forbidden":
                message += _did_you_mean(str(loc[-1]), known_fields(recipe_model(regs), data, loc[:-1], regs))
            problems.append(f"{where} {'.'.join(map(str, loc)) or '(recipe)'}: {message}")
    if recipe is not None and not problems:
        for loc, msg in resolve_refs(recipe, regs) or cross_check(resolve_sampler(recipe, regs), regs):
            where, loc = source.locate(loc)
            problems.append(f"{where} {'.'.join(map(str, loc))}: {msg}")
    if problems:
        raise RecipeError(problems)
    return recipe


def known_fields(model: type[BaseModel], data: Any, loc: tuple, regs: Registries) -> list[str]:
    """The field names a recipe may have at ``loc`` (a section, a component's Config): what a typo is
    compared with. Deeper places, and sections whose component is unknown, give none."""
    if not loc:
        return list(model.model_fields)
    if len(loc) != 1:
        return []
    section = loc[0]
    if section in COMPONENTS:
        spec = data.get(section) if isinstance(data, dict) else None
        name = spec.get("name") if isinstance(spec, dict) else None
        reg = regs.kind(COMPONENTS[section])
        return list(reg.get(name).model().model_fields) if name in reg else []
    field = model.model_fields.get(section)
    sub = field.annotation if field is not None else None
    return list(sub.model_fields) if isinstance(sub, type) and issubclass(sub, BaseModel) else []


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_refs(recipe, regs: Registries) -> list[tuple[tuple, str]]:
    """Validate every component reference (``fewstep.registry.component_ref``, e.g. an objective's
    kernel) against its registry, and store the validated Config in its place."""
    out: list[tuple[tuple, str]] = []
    for section in COMPONENTS:
        cfg = getattr(recipe, section)
        for field, kind in ref_fields(cfg) if cfg is not None else ():
            spec = getattr(cfg, field)
            if isinstance(spec, BaseModel):
                continue
            reg = regs.kind(kind)
            if spec["name"] not in reg:
                out.append(((section, field), reg.unknown_message(spec["name"])))
                continue
            try:
                setattr(cfg, field, reg.get(spec["name"]).model().model_validate(spec))
            except ValidationError as exc:
                out.extend(((section, field, *err["loc"]), error_message(err)) for err in exc.errors(include_url=False))
    return out


def cross_check(recipe, regs: Registries) -> list[tuple[tuple, str]]:
    """Checks that span sections; component Configs add theirs through ``check_recipe(recipe)``."""
    out: list[tuple[tuple, str]] = []
    if recipe.flowmap.parameterisation == "euler_fm" and recipe.interpolant.name != "ot_fm":
        out.append((("flowmap", "parameterisation"),
                    f"euler_fm needs the ot_fm interpolant (got {recipe.interpolant.name})"))
    for section in COMPONENTS:
        cfg = getattr(recipe, section)
        if isinstance(cfg, ChecksRecipe):
            out.extend((tuple(loc), msg) for loc, msg in cfg.check_recipe(recipe))
    return out


def missing_resources(recipe) -> list[str]:
    """What the recipe names that is not on this machine yet (a data folder, reference statistics, the
    run of train.init), a line each as ``field: message``: valid recipes whose runs would stop there."""
    found: list[tuple[tuple, str]] = []
    for cfg in [*(getattr(recipe, s) for s in COMPONENTS), *recipe.eval.metrics, *recipe.train.loggers]:
        if isinstance(cfg, NamesResources):
            found += cfg.resources()
    if recipe.train.init and not Path(recipe.train.init).exists():
        found.append((("train", "init"), f"{recipe.train.init} does not exist"))
    return [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in found]


def resolve_sampler(recipe, regs: Registries):
    """Fill ``sampler`` from the objective's ``default_sampler`` when the recipe leaves it out."""
    if recipe.sampler is None:
        obj = recipe.objective
        spec = dict(obj.default_sampler if isinstance(obj, HasDefaultSampler) else {"name": "euler"})
        entry = regs.samplers.get(spec["name"])
        recipe.sampler = tagged(entry).model_validate(spec)
    return recipe
