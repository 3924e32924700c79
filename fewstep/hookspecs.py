"""pluggy hook specifications: one ``fewstep_register_<kind>`` hook per registry kind.

A plugin is a module (or object) with functions decorated by :data:`fewstep.hookimpl`, found
through the ``fewstep`` entry-point group (``[project.entry-points.fewstep]`` in its
pyproject.toml) or named in ``FEWSTEP_PLUGINS``. Each hook receives a
:class:`fewstep.registry.Registrar` and calls ``registry.add(name, factory, Config, description)``.
Hooks are called once per plugin when the registries are first needed, never at import time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from fewstep.registry import Registrar

PROJECT = "fewstep"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def fewstep_register_interpolants(registry: Registrar) -> None:
    """Register interpolants. Factory: ``factory(cfg) -> Interpolant`` (alpha_t, sigma_t, eta, ...)."""


@hookspec
def fewstep_register_networks(registry: Registrar) -> None:
    """Register backbones. Factory: ``factory(cfg, spec: NetworkSpec) -> nn.Module`` called as
    ``net(x, t, s, cond)`` with t = c_noise(t) (and s the second time input or None)."""


@hookspec
def fewstep_register_kernels(registry: Registrar) -> None:
    """Register kernels. Factory: ``factory(cfg) -> Kernel`` with
    ``kernel(a [G,M,D], b [G,M,D], w [G]) -> Gram [G,M,M]``."""


@hookspec
def fewstep_register_objectives(registry: Registrar) -> None:
    """Register training objectives. Factory: ``factory(cfg, interpolant) -> Objective`` with
    ``loss(flowmap, batch, step) -> (scalar tensor, dict of floats or 0-d tensors)``. The Config
    model may set ``default_sampler`` (a ClassVar dict, or a property of its fields) and
    ``check_recipe(recipe) -> [(loc, message)]``, and reference other components with
    ``fewstep.registry.component_ref`` (built by ``build_ref``).
    The objective may define ``setup(recipe)`` (called once after it is built, e.g. to read
    ``train.steps``) and ``state_dict()``/``load_state_dict()`` (checkpointed with the run)."""


@hookspec
def fewstep_register_samplers(registry: Registrar) -> None:
    """Register samplers. Factory: ``factory(cfg) -> Sampler`` with ``schedule(interpolant, n)`` (the
    n + 1 descending times from T to eps) and ``sampler(flowmap, x_T, ts, cond, generator) -> x_0``
    (``generator`` seeds any fresh noise, e.g. restart's re-noising)."""


@hookspec
def fewstep_register_datasets(registry: Registrar) -> None:
    """Register datasets. Factory: ``factory(cfg, sigma_d) -> Dataset`` with ``shape``,
    ``num_classes``, ``kind`` ("points" or "images") and ``sample(n, generator) -> Batch``."""


@hookspec
def fewstep_register_metrics(registry: Registrar) -> None:
    """Register metrics. Factory: ``factory(cfg) -> Metric`` with
    ``metric(samples, reference, generator) -> float`` (lower is better)."""


@hookspec
def fewstep_register_loggers(registry: Registrar) -> None:
    """Register experiment loggers (``train.loggers``). Factory: ``factory(cfg) -> Logger`` with ``start(run)``,
    ``scalars(step, values)``, ``image(step, tag, path)``, ``results(kind, rows, step)`` and ``finish(status)``
    (:class:`fewstep.protocols.Logger`); called on rank 0 only."""
