"""Flow matching (I-CFM / rectified flow, optional minibatch OT) as a fewstep plugin.

Registered through the ``fewstep`` entry point ``fm = "fewstep_fm"``, exactly as a third-party
plugin would be. This module imports no torch; the objective lives in :mod:`fewstep_fm.objective`.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fewstep import ComponentConfig, hookimpl


class FMConfig(ComponentConfig):
    """Conditional flow matching on the framework's interpolant, prior N(0, sigma_d^2 I)."""

    default_sampler: ClassVar[dict] = {"name": "euler", "schedule": "uniform"}

    time_sampling: Literal["uniform", "logit_normal"] = Field(
        "uniform", description="p(t): uniform on [eps, T], or logit-normal (SD3; Esser et al. 2024) clipped to it.")
    logit_mean: float = Field(0.0, description="Mean m of t = sigmoid(m + s n) for logit-normal sampling (SD3: 0).")
    logit_std: float = Field(1.0, gt=0, description="Std s of t = sigmoid(m + s n) for logit-normal sampling (SD3: 1).")
    minibatch_ot: bool = Field(
        False, description="Re-pair data and noise in each batch by exact OT on squared distance "
                           "(OT-CFM; Tong et al. 2024).")
    sigma: float = Field(0.0, ge=0, description="Std of extra Gaussian noise on x_t (I-CFM sigma; 0 = rectified flow).")
    label_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability that a label becomes the null class, for classifier-free guidance "
                                     "(Ho & Salimans 2022; 0.1 is usual).")


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("fm", "fewstep_fm.objective:FlowMatching", FMConfig,
                 "flow matching: regress the flow map's velocity G(x_t, t, t) on alpha'_t x + sigma'_t eps")
