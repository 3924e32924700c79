"""MeanFlow (Geng, Deng, Bai, Kolter & He 2025, "Mean Flows for One-step Generative Modeling", arXiv 2505.13447)
as a fewstep plugin.

Registered through the ``fewstep`` entry point ``meanflow = "fewstep_meanflow"``, exactly as a third-party
plugin would be. This module imports no torch: the Config is here, the times (r, t) in
:mod:`fewstep_meanflow.times`, the loss in :mod:`fewstep_meanflow.objective`. Specification:
docs/objectives.md §3.

MeanFlow's r is fewstep's s: the average velocity u(z_t, r, t) is the Euler-FM flow map's sigma_d G, so the
objective needs ``flowmap.parameterisation: euler_fm`` (hence ``interpolant: ot_fm``) and a second time input;
the paper conditions on (t, t - r) (MF Table 1c), fewstep's ``second_time: stride``.

Defaults are the paper's CIFAR-10 configuration ("v0", py-meanflow ``scripts/cifar10_v0.sh``, marked "used in
paper"; unconditional, so no guidance). The ImageNet values (MF Table 4, the JAX ``configs``) are given in each
field's description. Where paper and code differ (the r = t share's naming, per-row versus first-rows
selection), the PyTorch CIFAR-10 code is followed; see :mod:`fewstep_meanflow.times`.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fewstep import ComponentConfig, hookimpl


class MeanFlowConfig(ComponentConfig):
    """MeanFlow: regress u_theta(z_t, r, t) on sg(v - (t - r) du/dt), du/dt from one JVP along (v, 0, 1), with
    adaptive weights (MF §4, Alg. 1; docs/objectives.md §3.2)."""

    # MF §3 / Alg. 2: z_0 = z_1 - u(z_1, 0, 1), k steps z_r = z_t - (t - r) u(z_t, r, t) on a decreasing grid
    # (MF-jax solver_step): fewstep's pushforward with Euler-FM, one backbone call per step (docs §3.7).
    default_sampler: ClassVar[dict] = {"name": "pushforward", "schedule": "uniform"}

    # --- the times (r, t) (MF §4 "Sampling time steps"; docs/objectives.md §3.3) ---
    logit_mean_t: float = Field(
        -2.0, description="Mean of logit(t) before the swap: t ~ sigmoid(N(mean, std^2)) (CIFAR-10 v0: -2.0, "
                          "py-meanflow cifar10_v0.sh --P_mean_t; ImageNet: -0.4, MF Table 4 / Table 1d).")
    logit_std_t: float = Field(
        2.0, gt=0, description="Std of logit(t) before the swap (CIFAR-10 v0: 2.0, --P_std_t; ImageNet: 1.0).")
    logit_mean_r: float = Field(
        -2.0, description="Mean of logit(r) before the swap; r is drawn independently of t, then (t, r) = "
                          "(max, min) (CIFAR-10 v0: -2.0, --P_mean_r; ImageNet: -0.4, the same law as t).")
    logit_std_r: float = Field(
        2.0, gt=0, description="Std of logit(r) before the swap (CIFAR-10 v0: 2.0, --P_std_r; ImageNet: 1.0).")
    share_r_neq_t: float = Field(
        0.75, ge=0, le=1, description="Share of rows with r != t, each row drawn independently; the others get "
                                      "r = t (plain flow matching). CIFAR-10 v0: 0.75 (py-meanflow --ratio, "
                                      "'Probability of sampling r DIFFERENT from t'); ImageNet: 0.25 (MF Table 4; "
                                      "MF-jax data_proportion 0.75 is the share of r = t rows, the opposite meaning).")
    # --- adaptive loss weighting w = 1 / (||Delta||^2 + c)^p (MF §4, Table 1e; docs §3.4) ---
    p: float = Field(
        0.75, ge=0, description="Power p of the adaptive weight sg(1/(e + c)^p), e = ||u - u_tgt||^2 summed over "
                                "all dimensions (CIFAR-10: 0.75, py-meanflow cifar10_v0.sh --norm_p; ImageNet: 1.0, "
                                "MF Table 1e / MF-jax norm_p; 0 = plain squared L2, which the 2D toy recipe "
                                "uses: p > 0 biases the fit where the target is noisy).")
    c: float = Field(
        1e-3, gt=0, description="Constant c of the adaptive weight (CIFAR-10: 1e-3, py-meanflow norm_eps default; "
                                "ImageNet: 0.01, MF-jax norm_eps). e is a sum over the D data dimensions, so c's "
                                "effect depends on D (docs §3.4).")
    # --- labels and classifier-free guidance in the target (MF §4.2, App. Eq. 21; docs §3.5) ---
    label_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability that a row's label becomes the null class, per row; such rows "
                                     "keep the unguided target v (MF-jax cond_drop). CIFAR-10: 0 (unconditional); "
                                     "ImageNet: 0.1 (class_dropout_prob).")
    omega: float = Field(
        1.0, gt=0, description="omega of the guided target v~ = omega v + kappa u(z_t, t, t | c) + (1 - omega - kappa) "
                               "u(z_t, t, t | null) (MF Eq. 21); the learned guidance scale is omega' = omega / "
                               "(1 - kappa). Default 1 with kappa 0: off (CIFAR-10). ImageNet (MF Table 4): B/2 and "
                               "XL/2+ omega 1.0 with omega' 2.0 (kappa 0.5, MF-jax configs/default.py); L/2 and XL/2 "
                               "omega 0.2 with omega' 2.5 (kappa 0.92).")
    kappa: float = Field(
        0.0, ge=0, lt=1, description="kappa of the guided target (MF Eq. 21, Table 5); 0 = the plain CFG form "
                                     "omega v + (1 - omega) u(.|null), one extra no-grad pass; kappa > 0 adds a "
                                     "conditional pass. Default 0 (off).")
    t_start: float = Field(
        0.0, ge=0, le=1, description="Guidance acts only for t in [t_start, t_end] (MF Table 4: [0, 1] for B/2, "
                                     "[0, 0.8] for L/2, [0, 0.75] for XL/2, [0.3, 0.8] for XL/2+); outside it v~ = v "
                                     "(MF-jax guidance_fn).")
    t_end: float = Field(1.0, ge=0, le=1, description="Upper end of the guidance interval in t (see t_start).")
    # --- numerics ---
    fp32: bool = Field(
        True, description="Run the guidance passes, the JVP and the loss with autocast off, in the weights' "
                          "precision (py-meanflow disables autocast there; MF-jax trains in fp32; docs §3.10 item 5).")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """The flow map MeanFlow needs (Euler-FM on OT-FM, a second time input) and a usable guidance setup."""
        out = []
        fmc = recipe.flowmap
        if fmc.parameterisation != "euler_fm":
            out.append((("flowmap", "parameterisation"),
                        f"MeanFlow's average velocity u = sigma_d G needs euler_fm (got {fmc.parameterisation})"))
            if recipe.interpolant.name != "ot_fm":  # (with euler_fm the core's own check reports it)
                out.append((("interpolant", "name"),
                            f"MeanFlow's path z_t = (1 - t) x + t eps is ot_fm (got {recipe.interpolant.name})"))
        if fmc.second_time == "none":
            out.append((("flowmap", "second_time"),
                        "MeanFlow trains u(z_t, r, t): use stride (the paper's (t, t - r), MF Table 1c) or s, "
                        "not none"))
        if self.t_start > self.t_end:
            out.append((("objective", "t_start"),
                        f"must not exceed t_end (got t_start {self.t_start}, t_end {self.t_end})"))
        if (self.omega != 1.0 or self.kappa != 0.0) and self.label_dropout == 0.0:
            out.append((("objective", "label_dropout"),
                        "guidance in the target (omega != 1 or kappa != 0) uses the null-class velocity, which is "
                        "only trained with label_dropout > 0 (ImageNet: 0.1)"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("meanflow", "fewstep_meanflow.objective:MeanFlow", MeanFlowConfig,
                 "MeanFlow: regress the average velocity u(z_t, r, t) on sg(v - (t - r) du/dt), one JVP per step")
