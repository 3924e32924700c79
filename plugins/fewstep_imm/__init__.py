"""Inductive Moment Matching (Zhou, Ermon & Song, ICML 2025) as a fewstep plugin.

Registered through the ``fewstep`` entry point ``imm = "fewstep_imm"``, exactly as a third-party
plugin would be. This module imports no torch: the Config is here, the maths in
:mod:`fewstep_imm.times` (t, s and r(s, t)), :mod:`fewstep_imm.weighting` (w(s, t) and the kernel
bandwidth) and :mod:`fewstep_imm.objective` (the loss). Specification: docs/imm.md.

Defaults are the paper's CIFAR-10 column of Table 5; ImageNet differs in k (12), b (4), label
dropout (0.1) and, for the DiT-XL headline model, a (2) and the minimum gap (1e-4).
"""
from __future__ import annotations

from typing import ClassVar, Literal, Union

from pydantic import Field, PositiveFloat

from fewstep import ComponentConfig, hookimpl
from fewstep.registry import Ref, component_ref

KernelRef = Ref("kernels")


class IMMConfig(ComponentConfig):
    """IMM: match the laws of f(x_t, s, t) and of the stop-gradient target f(x_r, s, r), r in [s, t),
    with a kernel MMD over groups of M particles (IMM §4, Alg. 3; docs/imm.md §4)."""

    # IMM App. I.2: CIFAR-10 samples with pushforward, 2 steps through eta = 1.4, uniform in t otherwise.
    default_sampler: ClassVar[dict] = {"name": "pushforward", "schedule": "eta", "mid_etas": [1.4]}

    group_size: int = Field(
        4, ge=1, description="Particles M per group; a group shares one (s, r, t). Must divide the per-device "
                             "batch (IMM Table 5: 4; M <= 2 collapses on ImageNet, Fig. 5).")
    kernel: KernelRef = component_ref(
        "kernels", "laplace", "Kernel of the MMD: laplace exp(-w||a-b||/D) (IMM Table 5), rbf or energy")
    bandwidth: Union[Literal["c_out"], PositiveFloat] = Field(
        "c_out", description="Kernel weight w~(s, t): 'c_out' = 1/|c_out(s, t)| of the flow map, which makes "
                             "kernel values independent of t (IMM §4.2, App. C.8), or a constant (unitless).")
    bandwidth_min_gap: float = Field(
        0.0, ge=0, lt=1, description="Cap w~ at its value for a gap of this size: w~ = 1/(sigma_d max(t - s, g)) under "
                                     "euler_fm. At small gaps w~ = 1/(sigma_d (t - s)) drowns the MMD's cross terms, "
                                     "leaving a median-seeking paired term (docs/imm.md §11); 0 = off (the paper).")
    small_gap_kernel: KernelRef = component_ref(
        "kernels", "rbf", "Kernel for groups whose gap t - s is below small_gap, e.g. rbf or smooth_laplace: smooth "
                          "at zero, so the paired term seeks the mean while w~ d is small, which needs "
                          "bandwidth_min_gap = small_gap too (docs/imm.md §11); used only when small_gap > 0")
    small_gap: float = Field(
        0.0, ge=0, lt=1, description="Gap t - s below which small_gap_kernel replaces kernel; 0 = off (the paper).")
    mapping: Literal["eta", "t", "lambda", "inv_eta"] = Field(
        "eta", description="r(s, t): constant decrement in eta (IMM §4.2, C.6), or the ablated decrement in t, "
                           "increment in log-SNR lambda, increment in 1/eta (IMM §7.5, Fig. 11).")
    k: int = Field(
        15, ge=0, le=40, description="The step is (range of the mapped quantity) / 2^k (IMM Table 5: 15 for "
                                     "CIFAR-10, 12 for ImageNet; larger k = smaller gap t - r).")
    min_gap: float = Field(
        0.0, ge=0, lt=1, description="Minimum gap Delta: r <= t - Delta, in time units (IMM App. I.6: 1e-4 for "
                                     "the FP16 DiT-XL run; 0 = off, as on CIFAR-10).")
    a: float = Field(
        1.0, ge=0, description="Exponent of alpha_t in w(s, t) (IMM Eq. 13, Table 5: 1; DiT-XL headline: 2).")
    b: float = Field(
        5.0, description="Shift of sigmoid(b - lambda_t) in w(s, t) (IMM Eq. 13, Table 5: 5 CIFAR-10, 4 ImageNet).")
    weight_elbo: bool = Field(
        True, description="Keep the ELBO factor 1/2 sigmoid(b - lambda_t) (-d lambda/dt) of w (IMM Table 4 ablation).")
    weight_alpha: bool = Field(True, description="Keep the factor alpha_t^a of w (IMM Table 4 ablation).")
    weight_norm: bool = Field(
        True, description="Keep the factor 1/(alpha_t^2 + sigma_t^2) of w (IMM Table 4 ablation).")
    target: Literal["online", "ema"] = Field(
        "online", description="Target branch: stop-gradient of the current weights (IMM §4.1 'Stop gradient'), "
                              "or an EMA of them (tried in lumalabs/imm PR #4; it trained worse).")
    target_ema_decay: float = Field(
        0.999, ge=0, lt=1, description="Decay of the EMA target when target = ema (unused otherwise).")
    label_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability that a label becomes the null class, per sample (IMM Table 5: "
                                     "0 for unconditional CIFAR-10, 0.1 for ImageNet).")
    target_labels: Literal["same", "clean"] = Field(
        "same", description="Labels of the target branch: the same dropped labels as the online branch, or the "
                            "labels before dropout (a variant found in unverified code; docs/imm.md §4.8).")
    shared_dropout: bool = Field(
        True, description="Restore the RNG state before the target pass so both passes share one dropout mask "
                          "(docs/imm.md §4.8).")
    target_fp32: bool = Field(
        False, description="Run the target pass with autocast off, in fp32 (an unverified variant; "
                           "docs/imm.md §4.8).")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """Cross-section checks: group size vs batch, the mapping's time range, the second time input."""
        out = []
        batch, acc, micro = recipe.train.batch_size, recipe.train.accumulate, recipe.train.micro_batch
        if micro is not None and micro % self.group_size:
            out.append((("objective", "group_size"),
                        f"must divide train.micro_batch (got group_size {self.group_size}, micro_batch {micro})"))
        elif micro is None and batch % (self.group_size * acc):
            out.append((("objective", "group_size"),
                        f"must divide each accumulation shard of train.batch_size (got group_size {self.group_size}, "
                        f"batch_size {batch}, accumulate {acc}); with several GPUs it must divide the per-device "
                        "shard"))
        if self.mapping in ("lambda", "inv_eta") and recipe.interpolant.eps <= 0:
            out.append((("objective", "mapping"),
                        f"'{self.mapping}' needs interpolant.eps > 0 (lambda and 1/eta are infinite at t = 0; "
                        f"IMM App. C.6 uses eps ~ 0.001-0.005)"))
        if self.bandwidth_min_gap > 0 and (self.bandwidth != "c_out" or recipe.flowmap.parameterisation != "euler_fm"):
            out.append((("objective", "bandwidth_min_gap"),
                        "caps w~ = 1/(sigma_d (t - s)): needs bandwidth c_out and flowmap.parameterisation euler_fm"))
        if recipe.flowmap.second_time == "none":
            out.append((("flowmap", "second_time"),
                        "IMM trains the two-time map f(x_t, s, t): use s or stride, not none"))
        return out


@hookimpl
def fewstep_register_objectives(registry):
    registry.add("imm", "fewstep_imm.objective:IMM", IMMConfig,
                 "Inductive Moment Matching: kernel MMD between f(x_t, s, t) and f(x_r, s, r) over M particles")
