"""Consistency training (iCT; ECT as a mapping option) as a fewstep plugin.

Registered through the ``fewstep`` entry point ``ct = "fewstep_ct"``, exactly as a third-party plugin
would be. This module imports no torch: the Config is here, the noise levels and curricula in
:mod:`fewstep_ct.curriculum`, the loss in :mod:`fewstep_ct.objective`. Specification:
docs/peers.md §3 and docs/imm.md §8.

The consistency function is the framework's flow map with s at the data end, f(x_t, eps, t). One
objective name, ``ct``, with ``mapping: ict | ect`` (iCT default): the two differ only in how the
pair of times (r, t) and the weight are drawn; the loss, the two passes and the sampler are shared.
Defaults are iCT's (Song & Dhariwal 2023) and ECT's (Geng et al. 2024) CIFAR-10 values.

ECT is a fine-tuning method: it starts from EDM's pretrained CIFAR-10 model (``train.init``) and
halves the gap t - r every 3.2 Mimg (``stage_images``). Trained from scratch, ``mapping: ect`` is
consistency training with ECT's mapping and curriculum, not ECT, and ECT's figures do not apply.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from fewstep import ComponentConfig, hookimpl

SIGMA_D = 0.5  # the framework's default prior std (IMM Table 5); samplers take eta = sigma / sigma_d
# 2-step consistency sampling goes through EDM sigma = 0.821 (iCT; ECT's ct_train.py `mid_t`). In
# this framework EDM sigma = sigma_d * eta_t, so eta = 0.821 / 0.5 = 1.642, i.e. t = 1.642 / 2.642
# = 0.6215 under OT-FM (IMM's own 2-step point eta = 1.4 is sigma = 0.70). A recipe with another
# interpolant.sigma_d should set sampler.mid_etas to 0.821 / sigma_d itself.
MID_ETA = 0.821 / SIGMA_D


class CTConfig(ComponentConfig):
    """Consistency training on the flow map f(x_t, eps, t): the online pass at t against the
    stop-gradient pass of the *current* weights at r < t on the same noise (iCT §3; ECT;
    docs/peers.md §3.3-3.4). EMA weights are for evaluation only (train.ema_decay)."""

    @property
    def default_sampler(self) -> dict:
        """Multistep consistency sampling (CM Alg. 1) from where training ended, EDM sigma = sigma_max (iCT:
        80, t = 0.9938 under OT-FM with sigma_d 0.5, not T = 0.994, which is sigma 82.8); 2 steps through
        EDM sigma 0.821 (see MID_ETA), other step counts uniform in t. Schedules 'uniform' and 'edm' (Karras
        rho = 7 in eta) are the restart sampler's other options."""
        return {"name": "restart", "schedule": "eta", "mid_etas": [MID_ETA], "sigma_max": self.sigma_max}

    mapping: Literal["ict", "ect"] = Field(
        "ict", description="How (r, t) are drawn: 'ict' = adjacent points of a Karras sigma grid that doubles "
                           "in stages (Song & Dhariwal 2023); 'ect' = t log-normal in sigma and r = r(t) whose gap "
                           "halves every stage_images images (Geng et al. 2024). ECT fine-tunes a pretrained "
                           "diffusion model (train.init); from scratch, 'ect' is consistency training with ECT's "
                           "mapping, not ECT.")
    # --- the sigma range (both mappings) ---
    sigma_min: float = Field(
        0.002, gt=0, description="Smallest EDM sigma (iCT/EDM: 0.002). The grid starts at max(sigma_min, "
                                 "sigma(eps)), and that point is the data end t = eps.")
    sigma_max: float = Field(
        80.0, gt=0, description="Largest EDM sigma (iCT/EDM: 80), capped at sigma(T) of the interpolant "
                                "(OT-FM, sigma_d 0.5, T 0.994: 82.8).")
    p_mean: float = Field(-1.1, description="Mean of ln sigma of the noise distribution (iCT §3.5 lognormal "
                                            "noise schedule; ECT: -1.1).")
    p_std: float = Field(2.0, gt=0, description="Std of ln sigma of the noise distribution (iCT §3.5 lognormal "
                                                "noise schedule; ECT: 2.0).")
    # --- iCT ---
    rho: float = Field(7.0, gt=0, description="iCT only: rho of the Karras sigma grid (Karras et al. 2022; iCT: 7).")
    s0: int = Field(10, ge=1, description="iCT only: initial number of grid intervals (iCT §3.4 curriculum: 10).")
    s1: int = Field(1280, ge=1, description="iCT only: final number of grid intervals (iCT §3.4 curriculum: 1280).")
    curriculum_steps: Optional[int] = Field(
        None, ge=1, description="iCT only: K, the steps the doubling curriculum spans, in optimiser steps; "
                                "null = train.steps (iCT: the whole run, 400k on CIFAR-10).")
    # --- ECT ---
    stage_images: Optional[int] = Field(
        3_200_000, ge=1, description="ECT only: training images per curriculum stage (the gap t - r shrinks by q "
                                     "each stage); steps per stage = stage_images / train.batch_size. ECT CIFAR-10: "
                                     "3.2 Mimg = 250 ticks of 12.8 kimg = 25k iterations at batch 128, eight stages "
                                     "in its 25.6 Mimg fine-tuning run. null = eight stages over train.steps.")
    stage_every: Optional[int] = Field(
        None, ge=1, description="ECT only: steps per curriculum stage, overriding stage_images (short runs, tests).")
    q: float = Field(2.0, gt=1, description="ECT only: the gap shrinks by q per stage (ECT: 2; its 1-hour run: 256).")
    k: float = Field(8.0, ge=0, description="ECT only: k of the sigmoid mapping 1 + k sigmoid(-b t) (ECT: 8).")
    b: float = Field(1.0, ge=0, description="ECT only: b of the sigmoid mapping, in 1/sigma units (ECT: 1).")
    # --- the distance ---
    distance: Literal["pseudo_huber", "squared_l2"] = Field(
        "pseudo_huber", description="Per-sample distance of the whole sample: pseudo-Huber sqrt(||d||^2 + c^2) - c "
                                    "(iCT §3.3; with c = 0 the L2 norm, ECT), or ||d||^2 (original CT with L2; "
                                    "IMM with one particle and the energy kernel).")
    huber_c: Optional[float] = Field(
        None, ge=0, description="c of the pseudo-Huber distance, in data units; null = 0.00054 sqrt(D) for ict "
                                "(iCT §3.3; D = elements per sample) and 0 for ect (ECT default).")
    shared_dropout: bool = Field(
        True, description="Replay the RNG before the target pass so both passes share one dropout mask "
                          "(openai/consistency_models, ECT; docs/peers.md §11.2).")
    label_dropout: float = Field(0.0, ge=0, lt=1, description="Probability that a label becomes the null class (the "
                                                              "same in both passes), for classifier-free guidance.")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """Cross-field checks: curriculum bounds, sigma range, huber_c without pseudo-Huber.

        Fields of the other mapping ('iCT only' / 'ECT only') are ignored, not refused, so that
        ``--set objective.mapping=ect`` works on an iCT recipe."""
        out = []
        if self.s0 > self.s1:
            out.append((("objective", "s0"), f"must not exceed s1 (got s0 {self.s0}, s1 {self.s1})"))
        if self.sigma_min >= self.sigma_max:
            out.append((("objective", "sigma_min"),
                        f"must be below sigma_max (got {self.sigma_min}, {self.sigma_max})"))
        if self.huber_c is not None and self.distance != "pseudo_huber":
            out.append((("objective", "huber_c"), f"only used with distance: pseudo_huber (got {self.distance})"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("ct", "fewstep_ct.objective:ConsistencyTraining", CTConfig,
                 "consistency training (iCT, or ECT with mapping: ect): f(x_t, eps, t) vs stop-grad f(x_r, eps, r)")
