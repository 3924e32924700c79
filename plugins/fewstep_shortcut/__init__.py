"""Shortcut models (Frans, Hafner, Levine & Abbeel 2024, "One Step Diffusion via Shortcut Models", ICLR 2025)
as a fewstep plugin.

Registered through the ``fewstep`` entry point ``shortcut = "fewstep_shortcut"``, exactly as a third-party
plugin would be. This module imports no torch; the loss lives in :mod:`fewstep_shortcut.objective`.
Specification: docs/objectives.md §6 (SC = the paper, SC-code = kvfrans/shortcut-models).

Defaults are SC-code's ImageNet-256 settings: B/8 bootstrap rows, 7 levels of step size (smallest half
step 1/128), an EMA target of decay 0.999, clipping at 4 (unit-scale data), label dropout 0.1 on the
flow-matching rows. Where fewstep differs from SC-code, the field says so (d = 0 flow rows; the step size
enters the network as t - s through ``second_time: stride``, not as the level log2(1/d)).
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from fewstep import ComponentConfig, hookimpl


class ShortcutConfig(ComponentConfig):
    """Shortcut models on the flow map: one step of size t - s must land where two half steps of the
    stop-gradient (EMA) target land, and at step size 0 the model is trained by flow matching (SC §3)."""

    # SC samples with plain jumps of size d = 1/n (docs/objectives.md §6.4): the flow map's pushforward over a
    # uniform grid, which visits exactly the grid times that the bootstrap rows train on.
    default_sampler: ClassVar[dict] = {"name": "pushforward", "schedule": "uniform"}

    bootstrap_fraction: float = Field(
        0.125, ge=0, lt=1, description="Share of each batch given to the self-consistency (bootstrap) rows; the "
                                       "rest are flow-matching rows at step size 0 (SC-code: B/8, bootstrap_every "
                                       "= 8; the paper's 1/4 is unverified). 0 = plain flow matching.")
    levels: int = Field(
        7, ge=1, le=12, description="Step sizes of the bootstrap rows: t - s = (T - eps) / 2^j, j = 0..levels-1, "
                                    "each checked against two half steps (SC-code: 7 levels, smallest half step "
                                    "1/128).")
    grid: bool = Field(
        True, description="Draw t of a bootstrap row on the grid eps + k (t - s), k = 1..2^j, which a uniform "
                          "2^j-step sampler visits (SC-code); false: t ~ U(eps + (t - s), T).")
    target: Literal["online", "ema"] = Field(
        "ema", description="Network of the two half steps: an EMA of the weights (SC-code: bootstrap_ema = 1) or "
                           "the stop-gradient of the current weights.")
    target_ema_decay: float = Field(
        0.999, ge=0, lt=1, description="Decay of the EMA target when target = ema (SC-code: 0.999, updated every "
                                       "step; unused otherwise).")
    clip: Optional[float] = Field(
        4.0, gt=0, description="Clip the half-step point x' and the target velocity to +-clip sigma_d (SC-code "
                               "clips both to +-4 on unit-scale latents; fewstep's data has std sigma_d); null = "
                               "no clipping.")
    label_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability that a flow-matching row's label becomes the null class, for "
                                     "classifier-free guidance (SC-code: 0.1 on ImageNet, on flow rows only; "
                                     "bootstrap rows keep their labels).")

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
    registry.add("shortcut", "fewstep_shortcut.objective:Shortcut", ShortcutConfig,
                 "shortcut models: one step of t - s matches two half steps (EMA target); flow matching at d = 0")
