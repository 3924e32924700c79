"""An example fewstep plugin: one kernel and one sampler, shipped as a third party would.

fewstep finds this module through the entry point ``example = "fewstep_example"`` in the
``fewstep`` group of this package's pyproject.toml, and calls its ``@fewstep.hookimpl`` functions
once, when the registries are first needed. Like the built-ins, this module imports no torch: it
holds only the Config models (pydantic, derived from :class:`fewstep.ComponentConfig`) and the
hooks; each factory is a ``"module:attr"`` string imported when the component is first built.

- kernel ``imq``: inverse multiquadric (1 + w^2 ||a-b||^2 / (c^2 D))^(-beta)  (:mod:`.kernel`)
- sampler ``midpoint``: explicit midpoint (RK2) steps of the probability-flow ODE, 2 NFE per step
  (:mod:`.sampler`)

Objectives are shipped the same way: fewstep's own, in ``plugins/fewstep_*`` of its repository, are
packaged exactly like this one (``plugins/fewstep_fm`` is the smallest).
"""
from __future__ import annotations

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
