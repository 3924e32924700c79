"""The contracts of every component kind, written down once as ``typing.Protocol``s.

The core, ``docs/plugins.md`` and the conformance kit (:mod:`fewstep.testing`) share these. A component
never has to inherit from them: having the members is enough (structural typing). Each is
``runtime_checkable``, so ``isinstance(x, Proto)`` tells whether ``x`` has the members (not their
signatures); the conformance kit then checks behaviour.

What every component of a kind must have:

- :class:`Objective` (``loss``), :class:`Sampler`, :class:`Dataset`, :class:`Metric`, :class:`Kernel`,
  :class:`Network` (``net(x, t, s, cond)``), :class:`Logger` (experiment tracking). Interpolants derive from
  :class:`fewstep.interpolants.Interpolant`, whose methods are the contract.

What a component may add, each a protocol of its own that the core tests with ``isinstance``:

- on an objective: :class:`Stateful` (checkpointed with the run), :class:`RunAware` (reads the run's
  settings once, e.g. ``train.steps`` for a curriculum), :class:`Trainable` (parameters of its own);
- on a network: :class:`GroupedTimes` (takes one time per group of samples);
- on a dataset: :class:`ImageData` (``kind == "images"``: decodes to uint8 for metrics and grids) and
  :class:`StoredImages` (original images read one by one, which ``fewstep encode`` reads);
- on a Config model (the class or an instance): :class:`ChecksRecipe` (cross-section checks),
  :class:`HasDefaultSampler` (an objective's sampler), :class:`HasEtaRange` (an interpolant's eta
  range, checked against sampler times without torch), :class:`HasExample` (what the conformance kit
  builds it with), :class:`HasExampleShape` (the sample shape the kit feeds a network),
  :class:`HasExampleSections` (the recipe sections the kit trains an objective in).

This module imports no torch (types only).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Union, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - types only
    import torch

    from fewstep.data.base import Batch
    from fewstep.flowmap import FlowMap
    from fewstep.interpolants import Interpolant

    Tensor = torch.Tensor

__all__ = [
    "ChecksRecipe", "Dataset", "GroupedTimes", "HasDefaultSampler", "HasEtaRange", "HasExample",
    "HasExampleSections", "HasExampleShape", "ImageData", "Kernel", "Metric", "Network", "Objective", "RunAware",
    "Sampler", "NamesResources", "Trainable", "NotesReference", "OwnReference", "Stateful", "StoredImages",
]

Location = tuple  # a recipe location such as ("objective", "group_size")


# --- objectives ----------------------------------------------------------------------------------
@runtime_checkable
class Objective(Protocol):
    """``factory(cfg, interpolant) -> Objective``. ``loss`` returns the scalar loss of one step and a
    dict of logged floats or 0-d tensors (averaged over each log interval into ``metrics.jsonl``)."""

    def loss(self, flowmap: FlowMap, batch: Batch, step: int) -> tuple[Tensor, dict[str, Any]]: ...


@runtime_checkable
class Stateful(Protocol):
    """State checkpointed with the run and restored on resume (an EMA target network; values resolved
    once for the run, such as a curriculum's length). ``state_dict`` holds tensors and plain
    containers only (the checkpoint is read with ``torch.load(weights_only=True)``)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Trainable(Protocol):
    """An objective with parameters of its own, trained with the network (sCT's learned weighting w_phi(t),
    Lu & Song 2024 §4.3): ``trainable(device)`` is called once, moves them to ``device`` and returns them.
    The run's optimiser steps them with the network's (same settings), their gradients are averaged over
    processes, and the objective checkpoints them through its ``state_dict`` (it must be :class:`Stateful`)."""

    def trainable(self, device: torch.device) -> list[Any]: ...


@runtime_checkable
class RunAware(Protocol):
    """``setup(recipe)`` is called once after the objective is built, before any checkpoint is loaded:
    what it resolves from the run's settings and must not change on resume belongs in its state."""

    def setup(self, recipe: Any) -> None: ...


# --- samplers, kernels, networks -----------------------------------------------------------------
@runtime_checkable
class Sampler(Protocol):
    """``factory(cfg) -> Sampler``: ``schedule(interpolant, n)`` gives the n + 1 descending times from T
    to eps; ``sampler(flowmap, x_T, ts, cond, generator)`` maps x at ts[0] to a sample at ts[-1]
    (``generator`` seeds any fresh noise). The flow map counts backbone calls (NFE)."""

    name: str

    def schedule(self, interpolant: Interpolant, n: int) -> Tensor: ...

    def __call__(self, fm: FlowMap, x: Tensor, ts: Tensor, cond: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Kernel(Protocol):
    """``kernel(a [G, M, D], b [G, M, D], w [G]) -> Gram [G, M, M]`` within each group."""

    def __call__(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor: ...


@runtime_checkable
class Network(Protocol):
    """``factory(cfg, spec: NetworkSpec) -> nn.Module`` called as ``net(x, t, s, cond)``: x scaled by
    c_in(t), t = c_noise(t), s the scaled second time input (None without one), cond integer labels
    (None when unconditional; the null class is ``num_classes``). Returns G with x's shape."""

    def __call__(self, x: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class GroupedTimes(Protocol):
    """A backbone with ``grouped_times = True`` takes t and s as [G] for G groups of B/G consecutive
    samples and embeds each distinct time once; others always get one time per sample."""

    grouped_times: bool


# --- data and metrics ----------------------------------------------------------------------------
@runtime_checkable
class Dataset(Protocol):
    """``factory(cfg, sigma_d) -> Dataset``, sampled, not iterated: the same generator seed gives the
    same :class:`~fewstep.data.base.Batch`, with overall std about sigma_d."""

    kind: Literal["points", "images"]
    shape: tuple[int, ...]
    num_classes: int | None

    def sample(self, n: int, generator: torch.Generator) -> Batch: ...


@runtime_checkable
class ImageData(Protocol):
    """An image dataset (``kind == "images"``): data space -> uint8 images [n, C, H, W] for metrics and grids."""

    def to_uint8(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class StoredImages(Protocol):
    """A data set whose original images can be read one by one, what ``fewstep encode`` feeds a VAE:
    ``originals()`` is a map-style torch Dataset of :class:`fewstep.data.imagefiles.ImageItem` (uint8
    image, label, and why it could not be read, if so) with ``name(i)`` for messages, which DataLoader
    workers may read."""

    labels: Tensor | None

    def __len__(self) -> int: ...

    def originals(self) -> Any: ...


@runtime_checkable
class OwnReference(Protocol):
    """A metric that may compare with a reference of its own (stored statistics, a named data set): when
    ``own_reference`` is true, evaluation hands it ``None`` instead of data images (no decoding of a
    reference set it would not read)."""

    own_reference: bool


@runtime_checkable
class Metric(Protocol):
    """``factory(cfg) -> Metric`` called as ``metric(samples, reference, generator)``; lower is better.
    ``"points"`` metrics get flat float tensors [n, D], ``"images"`` metrics uint8 images. Returns a
    float (its column is the registry name) or a dict of labelled values."""

    kind: Literal["points", "images"]

    def __call__(self, samples: Tensor, reference: Tensor, generator: torch.Generator | None = None
                 ) -> Union[float, dict[str, float]]: ...


# --- optional members of Config models -----------------------------------------------------------
@runtime_checkable
class Logger(Protocol):
    """``factory(cfg) -> Logger``: where a run's progress goes besides ``metrics.jsonl`` (experiment trackers).
    Called on rank 0 only, in this order: ``start`` once per training session (``run.start_step > 0`` when it
    resumes), ``scalars`` at every log interval, ``image`` when a sample grid is drawn (its PNG file),
    ``results`` with eval or bench results, ``finish`` at the end (status "finished", "stopped" or "failed").
    A logger that raises is warned about once and dropped; training goes on."""

    def start(self, run: Any) -> None: ...  # fewstep.run.tracking.RunInfo

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def image(self, step: int, tag: str, path: Path) -> None: ...

    def results(self, kind: Literal["eval", "bench"], rows: list[dict[str, Any]], step: int | None) -> None: ...

    def finish(self, status: str) -> None: ...


@runtime_checkable
class ChecksRecipe(Protocol):
    """Cross-section checks of a component's Config, run by recipe validation: each problem is
    ``(location, message)``, reported as ``file:line:col section.field: message``."""

    def check_recipe(self, recipe: Any) -> list[tuple[Location, str]]: ...


@runtime_checkable
class NotesReference(Protocol):
    """A data set whose fresh samples are not the original data (decoded latents are the VAE's
    reconstructions): ``reference_note`` says what metrics compare with, in evaluation reports."""

    reference_note: str


@runtime_checkable
class NamesResources(Protocol):
    """A Config that names files the run will need (a data folder, reference statistics, a logger's package):
    ``resources()``
    returns ``(location, message)`` for each one that is not there, which ``fewstep check`` reports as a
    note (the recipe is valid; the run would stop when it reached for the file)."""

    def resources(self) -> list[tuple[Location, str]]: ...


@runtime_checkable
class HasDefaultSampler(Protocol):
    """An objective Config's sampler section for recipes that leave ``sampler`` out: a class attribute,
    or a property when it depends on the config's own fields (CT starts at its ``sigma_max``)."""

    @property
    def default_sampler(self) -> dict[str, Any]: ...


@runtime_checkable
class HasEtaRange(Protocol):
    """An interpolant Config's (eta(eps), eta(T)) in closed form, so recipe validation can check sampler
    times (``mid_etas``) without building the interpolant (no torch)."""

    def eta_range(self) -> tuple[float, float]: ...


@runtime_checkable
class HasExample(Protocol):
    """What the conformance kit builds a component with: ``example(folder)`` returns Config fields,
    after writing any files they point at (a tiny image folder, encoded latents) into ``folder``."""

    @classmethod
    def example(cls, folder: Path) -> dict[str, Any]: ...


@runtime_checkable
class HasExampleShape(Protocol):
    """One sample's shape that the conformance kit feeds a network (default (2,))."""

    example_shape: ClassVar[tuple[int, ...]]


@runtime_checkable
class HasExampleSections(Protocol):
    """Recipe sections an objective needs in the conformance kit's tiny recipe (default: OT-FM, Euler-FM),
    e.g. sCT's ``{"interpolant": {"name": "vp_cosine"}, "flowmap": {"parameterisation": "simple_edm", ...}}``."""

    example_sections: ClassVar[dict[str, dict[str, Any]]]
