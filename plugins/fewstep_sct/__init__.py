"""sCT, continuous-time consistency training with TrigFlow (Lu & Song 2024, "Simplifying, Stabilizing and
Scaling Continuous-Time Consistency Models", arXiv 2410.11081, Alg. 1), as a fewstep plugin.

Registered through the ``fewstep`` entry point ``sct = "fewstep_sct"``, exactly as a third-party plugin
would be. This module imports no torch: the Config is here, the loss in :mod:`fewstep_sct.objective`, the
learned weighting w_phi(t) in :mod:`fewstep_sct.weighting`. Specification: docs/objectives.md §4.

The mapping (docs/objectives.md §4.1): the ``vp_cosine`` interpolant (alpha = cos(pi tau/2), sigma =
sin(pi tau/2), prior N(0, sigma_d^2 I)) *is* TrigFlow with t = pi tau / 2; the ``simple_edm``
parameterisation gives f(x_tau, 0, tau) = cos t x_tau - sin t sigma_d G, the sCM consistency function
with F = G (c_in = 1/sigma_d); sCM's c_noise(t) = t is ``flowmap.time_scale: pi/2`` (fewstep's c_noise
is time_scale * tau); ``second_time: none``. :meth:`SCTConfig.check_recipe` refuses anything else.

No official code exists; NVlabs/FastGen's ``SCMModel`` is a reimplementation, used only as a cross-check
(docs/objectives.md §4.6).
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from fewstep import ComponentConfig, hookimpl

# sCM Table 4 "one-step sampling starting time": EDM sigma_max = 80, t_max = arctan(80 / sigma_d); with
# sigma_d = 0.5 that is tau = (2/pi) arctan(160) = 0.99602, the T of the sct recipes (docs/objectives.md §4.4).
SIGMA_MAX = 80.0
# sCM Table 5 "intermediate time t_mid in 2-step sampling: 1.1" (TrigFlow time). For vp_cosine
# eta_tau = tan(pi tau / 2) = tan t whatever sigma_d is, so the restart sampler goes through eta = tan(1.1).
T_MID = 1.1
MID_ETA = math.tan(T_MID)  # 1.9647596572486523 (EDM sigma = sigma_d tan 1.1 = 0.982 for sigma_d 0.5)
TIME_SCALE = 0.5 * math.pi  # c_noise = time_scale tau = pi tau / 2 = t: sCM's c_noise(t) = t (Tables 3-4)


class SCTConfig(ComponentConfig):
    """sCT (Lu & Song 2024, Alg. 1): the consistency function f(x_t, 0, t) trained with the continuous-time
    consistency gradient: a pseudo-loss (e^{w_phi(t)}/D) ||F_theta - F^- - g||^2 - w_phi(t) whose
    theta-gradient is -(2 e^{w}/D) (dF/dtheta)^T g, with g = cos t df^-/dt (warmed up over H steps and
    normalised) from one no-grad JVP of the current weights (theta^- = sg(theta), no EMA teacher), and a
    learned weighting w_phi(t) trained with the network.

    Defaults are the paper's CIFAR-10 column (docs/objectives.md §4.3). The paper initialises sCT from a
    pretrained TrigFlow diffusion model ("Init: theta <- theta_pretrain", Alg. 1; Tables 3-4 list the
    pre-training); fewstep trains from scratch (or from ``train.init``), so a from-scratch run is not the
    paper's setting and its figures do not apply to it.
    """

    # sCM §4.4 / Tables 4-5 (docs/objectives.md §4.4): 1 step from t_max = arctan(sigma_max / sigma_d),
    # x = f(z, 0, t_max); 2 steps re-noise at t_mid = 1.1. The restart sampler does both: its 1-step
    # sample is f(x_T, eps, T), the pushforward step, and eps = 0 (the sct recipes) makes it sCM's f(z, 0, t_max).
    # Other step counts: uniform in tau (the paper reports 1 and 2 steps only).
    default_sampler: ClassVar[dict] = {"name": "restart", "schedule": "eta", "mid_etas": [MID_ETA],
                                       "sigma_max": SIGMA_MAX}
    # what the conformance kit trains it in: TrigFlow's interpolant and flow map (docs/objectives.md §4.1)
    example_sections: ClassVar[dict] = {
        "interpolant": {"name": "vp_cosine", "eps": 0.0},
        "flowmap": {"parameterisation": "simple_edm", "second_time": "none", "time_scale": TIME_SCALE}}

    p_mean: float = Field(
        -1.0, description="P_mean: ln(sigma_d tan t) ~ N(P_mean, P_std^2) (sCM Alg. 1; CIFAR-10: -1.0, sCM App. G.2 "
                          "via docs/peers.md §4, UNVERIFIED; ImageNet-64 -1.0, ImageNet-512 -0.8, Tables 3-4).")
    p_std: float = Field(
        1.4, gt=0, description="P_std of the log-normal proposal (CIFAR-10: 1.4, UNVERIFIED as P_mean; 1.8 in the "
                               "small-budget ECT comparison; ImageNet 1.6, Tables 3-4).")
    tangent_c: float = Field(
        0.1, gt=0, description="c of the tangent normalisation g <- g / (||g|| + c) (sCM Alg. 1, Tables 3-4: 0.1).")
    warmup_steps: int = Field(
        10_000, ge=0, description="H of the tangent warm-up r = min(1, step / H) (sCM Alg. 1, Tables 3-4: 10k "
                                  "iterations); 0 = no warm-up (r = 1). Short runs should set it smaller.")
    tangent_normalisation: Literal["normalise", "clip", "none"] = Field(
        "normalise", description="'normalise': g / (||g|| + c) per sample (sCM Alg. 1); 'clip': clip(g, -1, 1) "
                                 "elementwise and 'none': raw g, the alternatives of sCM Fig. 5a.")
    adaptive_weighting: bool = Field(
        True, description="Learn w_phi(t) (sCM Alg. 1, §4.2; Fig. 5b ablates it); false: w = 0, the loss is "
                          "||F_theta - F^- - g||^2 / D.")
    weighting_features: int = Field(
        128, ge=2, description="Random Fourier features of t in w_phi(t) = Linear(features(t)), output zero-"
                               "initialised (sCM does not give the architecture, UNVERIFIED, docs/objectives.md §4.2; "
                               "128 as EDM2's uncertainty head, Karras et al. 2024, UNVERIFIED here).")
    shared_dropout: bool = Field(
        True, description="Replay the RNG so that the grad pass F_theta draws the dropout mask of the JVP pass, "
                          "making F_theta - F^- = 0 in value (UNVERIFIED in sCM; docs/objectives.md §4.7 item 8).")
    label_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability that a label becomes the null class (the same in both passes), "
                                     "for classifier-free guidance; sCM's CIFAR-10 model is unconditional: 0.")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """The TrigFlow mapping of docs/objectives.md §4.1: vp_cosine, simple_edm, second_time none and
        time_scale pi/2 (c_noise(t) = t); anything else trains another model than sCM's."""
        out = []
        if recipe.interpolant.name != "vp_cosine":
            out.append((("interpolant", "name"),
                        f"sCT is TrigFlow (x_t = cos t x + sin t z): use vp_cosine (got {recipe.interpolant.name})"))
        fmc = recipe.flowmap
        if fmc.parameterisation != "simple_edm":
            out.append((("flowmap", "parameterisation"),
                        "sCT's consistency function cos t x_t - sin t sigma_d F is simple_edm "
                        f"(got {fmc.parameterisation})"))
        if fmc.second_time != "none":
            out.append((("flowmap", "second_time"),
                        f"sCT trains only f(x_t, 0, t), a one-time model: use none (got {fmc.second_time})"))
        if abs(fmc.time_scale - TIME_SCALE) > 1e-6:
            out.append((("flowmap", "time_scale"),
                        f"sCM's c_noise(t) = t needs pi/2 = {TIME_SCALE!r} (c_noise = time_scale tau, t = pi tau / 2; "
                        f"got {fmc.time_scale})"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("sct", "fewstep_sct.objective:SCT", SCTConfig,
                 "continuous-time consistency training with TrigFlow (sCT): f(x_t, 0, t) pushed along "
                 "g = cos t df/dt with a learned weighting w_phi(t)")
