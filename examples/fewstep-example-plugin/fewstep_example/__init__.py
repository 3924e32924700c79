"""An example fewstep plugin: one kernel, one sampler and one objective, shipped as a third party would.

fewstep finds this module through the entry point ``example = "fewstep_example"`` in the
``fewstep`` group of this package's pyproject.toml, and calls its ``@fewstep.hookimpl`` functions
once, when the registries are first needed. Like the built-ins, this module imports no torch: it
holds only the Config models (pydantic, derived from :class:`fewstep.ComponentConfig`) and the
hooks; each factory is a ``"module:attr"`` string imported when the component is first built.

- kernel ``imq``: inverse multiquadric (1 + w^2 ||a-b||^2 / (c^2 D))^(-beta)  (:mod:`.kernel`)
- sampler ``midpoint``: explicit midpoint (RK2) steps of the probability-flow ODE, 2 NFE per step
  (:mod:`.sampler`)
- objective ``shortcut``: the shortcut-model objective of Frans et al. 2024 on the flow map
  (:mod:`.shortcut`)
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

# The sampler options (schedule, mid_etas, rho, guidance) are the built-in samplers' own, so that
# `sampler: {name: midpoint, schedule: edm}` reads like any other sampler section.
from fewstep import ComponentConfig, SamplerConfig, hookimpl

__version__ = "0.1.0"


# --- kernel ------------------------------------------------------------------------------------
class IMQConfig(ComponentConfig):
    """Inverse multiquadric kernel k(a, b) = (1 + w^2 ||a - b||^2 / (c^2 D))^(-beta).

    With the defaults (c = 1, beta = 1/2) it agrees with fewstep's RBF kernel
    exp(-w^2 ||a-b||^2 / 2D) to second order at a = b, but its tails decay polynomially, so far
    particles still attract (Gorham & Mackey 2017, "Measuring Sample Quality with Kernels").
    """

    c: float = Field(1.0, gt=0, description="Length scale c, in units of the bandwidth: the kernel halves (beta = 1/2) "
                                            "at w ||a - b|| / sqrt(D) = c sqrt(3). Larger c = wider kernel.")
    beta: float = Field(0.5, gt=0, description="Exponent beta > 0 (1/2: the classic IMQ; any beta > 0 is positive "
                                               "definite and characteristic; Gorham & Mackey 2017 take 0 < beta < 1).")


@hookimpl
def fewstep_register_kernels(registry):
    registry.add("imq", "fewstep_example.kernel:build_imq", IMQConfig,
                 "inverse multiquadric (1 + w^2 ||a-b||^2 / (c^2 D))^(-beta), heavy-tailed")


# --- sampler -----------------------------------------------------------------------------------
class MidpointConfig(SamplerConfig):
    """Explicit midpoint (RK2) steps of dx/dt = v(x, t) with the flow map's velocity: 2 NFE per step."""


@hookimpl
def fewstep_register_samplers(registry):
    registry.add("midpoint", "fewstep_example.sampler:build_midpoint", MidpointConfig,
                 "explicit midpoint (RK2) steps of the ODE with the flow map's velocity; 2 NFE per step")


# --- objective ---------------------------------------------------------------------------------
class ShortcutConfig(ComponentConfig):
    """Shortcut models (Frans, Hafner, Levine & Abbeel 2024, "One Step Diffusion via Shortcut Models";
    docs/peers.md §5) on the flow map: one step of size t - s must land where two half steps
    of the stop-gradient target land, and at step size 0 the model is trained by flow matching."""

    # Shortcut models sample with plain jumps of size d = 1/n (docs/peers.md §5): the flow map's pushforward
    # over a uniform grid, which visits exactly the grid times that the bootstrap rows train on.
    default_sampler: ClassVar[dict] = {"name": "pushforward", "schedule": "uniform"}

    bootstrap_fraction: float = Field(
        0.125, ge=0, lt=1, description="Share of each batch given to the self-consistency (bootstrap) rows; the "
                                       "rest are flow-matching rows at step size 0 (SC repository: B/8, "
                                       "bootstrap_every = 8). 0 = plain flow matching.")
    levels: int = Field(
        7, ge=1, le=12, description="Step sizes of the bootstrap rows: t - s = (T - eps) / 2^j, j = 0..levels-1, "
                                    "each checked against two half steps (SC: 7 levels, smallest half step 1/128).")
    grid: bool = Field(
        True, description="Draw t of a bootstrap row on the grid eps + k (t - s), k = 1..2^j, which a uniform "
                          "2^j-step sampler visits (SC); false: t ~ U(eps + (t - s), T).")
    target: Literal["online", "ema"] = Field(
        "ema", description="Network of the two half steps: an EMA of the weights (SC: bootstrap_ema = 1) or the "
                           "stop-gradient of the current weights.")
    target_ema_decay: float = Field(
        0.999, ge=0, lt=1, description="Decay of the EMA target when target = ema (SC: 0.999; unused otherwise).")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """Cross-section checks, reported as ``file:line:col section.field: message`` by ``fewstep check``."""
        out = []
        if recipe.flowmap.second_time == "none":
            out.append((("flowmap", "second_time"),
                        "the shortcut objective conditions the network on the step size: use stride "
                        "(t - s, SC's d) or s, not none"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("shortcut", "fewstep_example.shortcut:Shortcut", ShortcutConfig,
                 "shortcut models: one step of t - s matches two half steps (EMA target); flow matching at d = 0")
