"""Build a run's components (dataset, interpolant, network, flow map, objective, sampler) from a recipe."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.networks import NetworkSpec
from fewstep.protocols import RunAware
from fewstep.registry import Registries


@dataclass
class Components:
    recipe: Any
    dataset: Any
    interpolant: Any
    flowmap: FlowMap
    objective: Any
    sampler: Any
    device: torch.device

    @property
    def net(self) -> torch.nn.Module:
        return self.flowmap.net


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. A bad or unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available here")
    return device


def set_threads(threads: int | None) -> None:
    """Set torch's CPU thread count (None leaves torch's default)."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def build_components(recipe, regs: Registries, device: torch.device | str | None = None,
                     objective: bool = True) -> Components:
    """Instantiate every component of ``recipe`` through the registries."""
    device = resolve_device(str(device or recipe.train.device))
    interpolant = regs.interpolants.build(recipe.interpolant)
    dataset = regs.datasets.build(recipe.data, interpolant.sigma_d)
    spec = NetworkSpec(tuple(dataset.shape), dataset.num_classes, recipe.flowmap.second_time != "none")
    torch.manual_seed(recipe.train.seed)  # the initial weights follow the recipe's seed
    net = regs.networks.build(recipe.network, spec).to(device)
    fm = FlowMap(net, interpolant, recipe.flowmap.parameterisation, recipe.flowmap.second_time,
                 recipe.flowmap.time_scale, dataset.num_classes)
    obj = regs.objectives.build(recipe.objective, interpolant) if objective else None
    if isinstance(obj, RunAware):
        obj.setup(recipe)  # an objective may read the run's settings (e.g. train.steps for a curriculum)
    sampler = regs.samplers.build(recipe.sampler)
    check_schedules(sampler, interpolant, recipe.eval.step_counts())
    return Components(recipe, dataset, interpolant, fm, obj, sampler, device)


def check_schedules(sampler, interpolant, step_counts: list[int]) -> None:
    """The sampler's time grid for each step count the run will sample, built once before anything is
    trained or written: a grid the interpolant cannot give (say mid_etas outside (eta(eps), eta(T)))
    is a ConfigError now, not a traceback when the first sample grid is drawn."""
    for n in step_counts:
        try:
            sampler.schedule(interpolant, n)
        except ValueError as exc:
            raise ConfigError(f"sampler: the {n}-step schedule: {exc}") from None


def flowmap_for(comps: Components, net: torch.nn.Module) -> FlowMap:
    """The same flow map around other weights (the EMA copy, for evaluation)."""
    return comps.flowmap.with_net(net)
