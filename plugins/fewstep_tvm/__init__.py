"""Terminal Velocity Matching (Zhou, Parger, Haque & Song 2025, arXiv 2511.19797) as a fewstep plugin.

Registered through the ``fewstep`` entry point ``tvm = "fewstep_tvm"``, exactly as a third-party plugin
would be. This module imports no torch: the Config is here, the times in :mod:`fewstep_tvm.times`, the
loss in :mod:`fewstep_tvm.objective`. Specification: docs/objectives.md §5.

The loss is the one the official code computes (lumalabs/tvm @ 82e8e5d, ``training/loss.py`` and
``training/wrapper.py``; docs/objectives.md §5.2). The paper's own statement of it (§5.3) was not read
beyond the abstract: where it might differ (a time weighting lambda(s), whether the FM time is s or an
independent s') is UNVERIFIED, and this plugin follows the code.

Mapping (docs/objectives.md §5.1): TVM writes f(x_t, t, s) = x_t + (s - t) k F(x_t, t, t - s, beta, c);
fewstep's flow map f(x_t, s, t) with the Euler-FM parameterisation is x_t - sigma_d (t - s) G, so
k F = sigma_d G, with ``second_time: stride`` and ``time_scale: 1`` (the official DiT embeds raw t and
t - s). Learned guidance is NOT built: the official model takes beta = 1/w as a third conditioning input
and scales its output by w (``do_scale_param``), which needs a backbone input fewstep does not have.
What is built is the unguided loss with label dropout (``guidance: 1``, the default) and, for labelled
data, the official loss at one fixed w without the beta input (``guidance: w``): the network then learns
the w-guided velocity for real labels and the plain one for the null label, sampled with 1 NFE a step.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fewstep import ComponentConfig, hookimpl


class TVMConfig(ComponentConfig):
    """TVM: match the online map's terminal velocity d f(x_t, s, t)/ds to an EMA network's velocity at the
    terminal point f (stop-gradient), plus flow matching at an independent time s' (docs/objectives.md §5.2)."""

    # docs/objectives.md §5.6 ([TVM] generate_images.generator_fn): x <- x + (t_{i+1} - t_i) k F on a uniform grid
    default_sampler: ClassVar[dict] = {"name": "pushforward", "schedule": "uniform"}

    gap_mean: float = Field(
        -0.8, description="Mean of the logit of the gap l = t - s, l = sigmoid(N(gap_mean, gap_std^2)) ([TVM] "
                          "configs/im256_w2.yaml loss.gap_P_mean: -0.8).")
    gap_std: float = Field(
        1.0, gt=0, description="Std of the logit of the gap l ([TVM] configs loss.gap_P_std: 1.0).")
    s_mean: float = Field(
        -0.4, description="Mean of the logit of the terminal time s (truncated so that s + l <= 1) and of the "
                          "independent FM time s' ([TVM] configs loss.s_P_mean: -0.4).")
    s_std: float = Field(
        1.0, gt=0, description="Std of the logit of s and s' ([TVM] configs loss.s_P_std: 1.0).")
    target_ema_decay: float = Field(
        0.99, ge=0, lt=1, description="Decay of the EMA network that gives the terminal-velocity target, separate "
                                      "from the evaluation EMA train.ema_decay ([TVM] configs "
                                      "training.ema_target_beta: 0.99; docs/objectives.md §5.8 item 4).")
    label_dropout: float = Field(
        0.1, ge=0, lt=1, description="Probability that a label becomes the null class, the same in every term "
                                     "([TVM] configs loss.label_dropout: 0.1; no effect on unlabelled data).")
    guidance: float = Field(
        1.0, ge=1, description="w of the official loss at a fixed scale with do_scale_param: false (as "
                               "configs/im512_w2p5.yaml), without the beta = 1/w network input (not built): labelled "
                               "rows regress w (eps - x) + (1 - w) v_EMA(x_s', s', null), null-label rows eps - x, and "
                               "both terms are weighted by 1/w^2 ([TVM] wrapper.py forward; the official configs use "
                               "w 1.75-2.5). 1 = unguided (default). Needs labelled data.")
    fused_pass: bool = Field(
        False, description="false (default): a forward-mode pass of the B terminal rows and a plain forward of the "
                           "B flow-matching rows, as the official code does; true: both in ONE forward-mode pass of "
                           "2B rows (same loss), which also carries a tangent through the FM rows and measured "
                           "1.33x slower on CPU (bench/README.md). Both train under DDP, tested.")
    zero_nan_rows: bool = Field(
        True, description="Set the residuals of rows whose loss is NaN to 0, as the official code zeroes their loss "
                          "(here before squaring, so that a NaN target leaves finite gradients), and log their "
                          "count as nan_rows (the official code only prints it); false = keep them, and the run "
                          "stops on the NaN loss. A NaN tangent of the online pass stops the run in FlowMap.jvp.")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """Cross-section checks: TVM's map is Euler-FM with a second time input; a guided target needs the
        null class trained by label dropout."""
        out = []
        if recipe.flowmap.parameterisation != "euler_fm":
            out.append((("flowmap", "parameterisation"),
                        f"TVM's map f = x_t + (s - t) k F is Euler-FM: use euler_fm (got "
                        f"{recipe.flowmap.parameterisation})"))
        if recipe.flowmap.second_time == "none":
            out.append((("flowmap", "second_time"),
                        "TVM trains the two-time map f(x_t, s, t): use stride (official) or s, not none"))
        if self.guidance != 1 and self.label_dropout == 0:
            out.append((("objective", "guidance"),
                        f"a guided target (guidance {self.guidance}) needs the null class: set "
                        "objective.label_dropout > 0 (official: 0.1)"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("tvm", "fewstep_tvm.objective:TVM", TVMConfig,
                 "Terminal Velocity Matching: df(x_t, s, t)/ds vs an EMA net's velocity at sg f, plus FM")
