"""The core's built-in components, registered through the same hooks and entry point as any plugin.

This module and its Config models import no torch: factories are ``"module:attr"`` strings that
are imported only when a component is built, so ``fewstep check`` and ``fewstep plugins`` stay fast.
"""
from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import Field, model_validator

from fewstep.builtin.datasets import (
    CheckerboardConfig,
    CIFAR10Config,
    DigitsConfig,
    EightGaussiansConfig,
    ImageFolderConfig,
    LatentsConfig,
    MoonsConfig,
    SpiralConfig,
)
from fewstep.builtin.metrics import FDDigitsConfig, FIDConfig, MMDConfig, SW2Config
from fewstep.hookspecs import hookimpl
from fewstep.networks import DIT_SIZES
from fewstep.protocols import HasEtaRange
from fewstep.registry import ComponentConfig


# --- interpolants ------------------------------------------------------------------------------
class InterpolantConfig(ComponentConfig):
    sigma_d: float = Field(
        0.5, gt=0, description="Std of the data and of the prior N(0, sigma_d^2 I) (IMM Table 5: 0.5).")
    eps: float = Field(
        0.006, ge=0, lt=1, description="Smallest time eps_t (IMM App. I.1: 0.006 for pixels, 0 for latents).")
    T: float = Field(
        0.994, gt=0, le=1, description="Largest time T, where sampling starts (IMM App. I.1: 0.994 for OT-FM).")

    @model_validator(mode="after")
    def _range(self):
        if self.eps >= self.T:
            raise ValueError(f"eps must be smaller than T (got eps={self.eps}, T={self.T})")
        return self


class OTFMConfig(InterpolantConfig):
    """OT-FM: alpha_t = 1 - t, sigma_t = t."""

    def eta_range(self) -> tuple[float, float]:
        """(eta(eps), eta(T)) with eta_t = t / (1 - t) (no torch: recipe validation uses it)."""
        return self.eps / (1 - self.eps), (self.T / (1 - self.T) if self.T < 1 else math.inf)


class CosineConfig(InterpolantConfig):
    """VP-cosine: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2)."""

    T: float = Field(
        0.996, gt=0, le=1, description="Largest time T (IMM App. I.1: 0.996 for the cosine path, eta_max ~ 160).")

    def eta_range(self) -> tuple[float, float]:
        """(eta(eps), eta(T)) with eta_t = tan(pi t / 2) (no torch: recipe validation uses it)."""
        return math.tan(0.5 * math.pi * self.eps), (math.tan(0.5 * math.pi * self.T) if self.T < 1 else math.inf)


@hookimpl
def fewstep_register_interpolants(registry):
    registry.add("ot_fm", "fewstep.interpolants:build_ot_fm", OTFMConfig,
                 "OT-FM / rectified flow path: alpha_t = 1 - t, sigma_t = t")
    registry.add("vp_cosine", "fewstep.interpolants:build_vp_cosine", CosineConfig,
                 "variance-preserving cosine path: alpha_t = cos(pi t/2), sigma_t = sin(pi t/2)")


# --- networks ----------------------------------------------------------------------------------
class MLPConfig(ComponentConfig):
    width: int = Field(256, ge=1, description="Hidden units per layer.")
    depth: int = Field(4, ge=1, description="Number of hidden layers.")
    emb_dim: int = Field(128, ge=2, description="Width of the (t, s, label) embedding.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")


class UNetConfig(ComponentConfig):
    """diffusers' UNet2DModel, the generic image backbone. Defaults: DDPM's CIFAR-10 UNet (Ho et al. 2020;
    35.7M parameters + the s branch), one attention head. IMM's CIFAR-10 network is ``ddpmpp``; this one
    differs from it in: 2 blocks per level (DDPM++: 4), attention also in the middle block, no sqrt(1/2)
    scaling of residual sums, GroupNorm eps 1e-5 (1e-6), strided-conv downsampling and nearest + conv
    upsampling (a 2x2 box filter with 1x1 skip projections), diffusers' timestep frequencies and its
    default (not near-zero) output initialisation."""

    example_shape: ClassVar[tuple[int, ...]] = (3, 8, 8)  # what the conformance kit feeds it

    channels: list[int] = Field([128, 256, 256, 256], min_length=1,
                                description="Channels per resolution level (DDPM CIFAR-10: 128 x (1, 2, 2, 2)).")
    attention: list[bool] = Field([False, True, False, False],
                                  description="Self-attention per level (DDPM CIFAR-10: at 16x16, the second level).")
    layers_per_block: int = Field(2, ge=1, description="Residual blocks per level (DDPM: 2).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in the residual blocks (DDPM CIFAR-10: 0.1).")
    norm_groups: int = Field(32, ge=1, description="GroupNorm groups; must divide every channel count (DDPM: 32).")
    head_dim: Optional[int] = Field(
        None, ge=1, description="Channels per attention head; null = one head over all channels (DDPM's single-head "
                                "attention; diffusers' own default of 8 would give 32 heads at 256 channels).")

    @model_validator(mode="after")
    def _levels(self):
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention needs one flag per level of channels ({len(self.channels)}), "
                             f"got {len(self.attention)}")
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups {self.norm_groups} must divide every channel count (not {bad})")
        return self


class DDPMppConfig(ComponentConfig):
    """DDPM++ (Song et al. 2021), EDM's SongUNet as IMM trains it on CIFAR-10 (IMM Table 5, App. I.1; the
    released config): with these defaults and a second time input, 56,061,443 parameters."""

    example_shape: ClassVar[tuple[int, ...]] = (3, 8, 8)  # what the conformance kit feeds it

    model_channels: int = Field(128, ge=4, description="Base channels (EDM/IMM CIFAR-10: 128).")
    channel_mult: list[Annotated[int, Field(ge=1)]] = Field(
        [2, 2, 2], min_length=1, description="Channel multiplier per resolution level (EDM/IMM CIFAR-10: 2, 2, 2).")
    num_blocks: int = Field(4, ge=1, description="Residual blocks per level (EDM DDPM++: 4).")
    attn_resolutions: list[Annotated[int, Field(ge=1)]] = Field(
        [16], description="Resolutions with one-head self-attention (EDM DDPM++: 16).")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout in the residual blocks (IMM's released CIFAR-10 "
                                                         "config: 0.2; EDM's CIFAR-10: 0.13).")
    channel_mult_emb: int = Field(4, ge=1, description="Embedding width / model_channels (EDM: 4, i.e. 512).")
    augment_dim: int = Field(0, ge=0, description="Augmentation labels the network is conditioned on (EDM's "
                                                  "augmentation pipe: 9; 0 = none, as in IMM's released model).")

    @model_validator(mode="after")
    def _groups(self):
        bad = [c for c in (self.model_channels * m for m in [1, *self.channel_mult]) if c % min(32, c // 4)]
        if self.model_channels % 4 or bad:
            raise ValueError(f"model_channels {self.model_channels} x channel_mult must split into GroupNorm groups of "
                             "min(32, C/4) (use a multiple of 128 for the paper's 32 groups)")
        return self


class DiTConfig(ComponentConfig):
    """DiT (Peebles & Xie 2023) with adaLN-Zero; c = emb(t) + emb(s) + emb(label) (IMM App. I.1).
    Defaults: DiT-B/2, the backbone of IMM's ImageNet ablations (130M parameters on 32x32x4 latents)."""

    example_shape: ClassVar[tuple[int, ...]] = (4, 8, 8)  # what the conformance kit feeds it

    size: Optional[Literal["S", "B", "L", "XL"]] = Field(
        "B", description="DiT size, (hidden, depth, heads) from DiT Table 1: S (384, 12, 6), B (768, 12, 12), "
                         "L (1024, 24, 16), XL (1152, 28, 16); null: give hidden, depth and heads.")
    hidden: Optional[int] = Field(None, ge=4, description="Token width, overriding size's (DiT Table 1; "
                                                          "divisible by 4 for the 2D sin-cos position embedding).")
    depth: Optional[int] = Field(None, ge=1, description="Number of DiT blocks, overriding size's (DiT Table 1).")
    heads: Optional[int] = Field(
        None, ge=1, description="Attention heads, overriding size's (DiT Table 1); must divide hidden.")
    patch: int = Field(2, ge=1, description="Patch side p; must divide the image side (DiT: 2, 4 or 8; IMM uses 2).")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP width / hidden in each block (DiT: 4).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on attention weights and the MLP hidden layer "
                                                        "(DiT: none; IMM's ImageNet runs: 0).")

    @model_validator(mode="after")
    def _dims(self):
        if self.size is None and None in (self.hidden, self.depth, self.heads):
            raise ValueError("size is null: give hidden, depth and heads")
        hidden, _, heads = (v if v is not None else b for v, b in
                            zip((self.hidden, self.depth, self.heads), DIT_SIZES.get(self.size, (None,) * 3)))
        if hidden % heads or hidden % 4:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads}) and by 4")
        return self


@hookimpl
def fewstep_register_networks(registry):
    registry.add("mlp", "fewstep.networks.mlp:build_mlp", MLPConfig,
                 "MLP with sinusoidal t/s embeddings, for 2D and other flat data")
    registry.add("unet", "fewstep.networks.unet:build_unet", UNetConfig,
                 "diffusers UNet2DModel for images (generic; not IMM's network: see ddpmpp); s through a second "
                 "timestep embedding (IMM App. I.1)")
    registry.add("ddpmpp", "fewstep.networks.ddpmpp:build_ddpmpp", DDPMppConfig,
                 "DDPM++ (EDM's SongUNet) as IMM trains it on CIFAR-10; s through its own embedding MLP (App. I.1)")
    registry.add("dit", "fewstep.networks.dit:build_dit", DiTConfig,
                 "DiT (Peebles & Xie 2023) with adaLN-Zero; t, s and label embeddings summed (IMM App. I.1)")


# --- kernels -----------------------------------------------------------------------------------
class LaplaceConfig(ComponentConfig):
    eps: float = Field(1e-8, gt=0, description="Floor on the distance, so the gradient at 0 is defined (IMM §4.2).")


class SmoothLaplaceConfig(ComponentConfig):
    delta: float = Field(1.0, gt=0, description="Scaled distance w ||a-b|| below which the exponent turns quadratic "
                                                "(pseudo-Huber); -> 0 is Laplace. Not from the IMM paper.")


class NoConfig(ComponentConfig):
    pass


@hookimpl
def fewstep_register_kernels(registry):
    registry.add("laplace", "fewstep.kernels:build_laplace", LaplaceConfig,
                 "exp(-w ||a-b|| / D), IMM's default kernel")
    registry.add("rbf", "fewstep.kernels:build_rbf", NoConfig, "exp(-w^2 ||a-b||^2 / 2D)")
    registry.add("smooth_laplace", "fewstep.kernels:build_smooth_laplace", SmoothLaplaceConfig,
                 "exp(-(sqrt((w ||a-b||)^2 + delta^2) - delta) / D): Laplace far, quadratic near 0")
    registry.add("energy", "fewstep.kernels:build_energy", NoConfig,
                 "-w^2 ||a-b||^2 / D; with one particle IMM becomes CT with an L2 loss")


# --- samplers ----------------------------------------------------------------------------------
class SamplerConfig(ComponentConfig):
    schedule: Literal["uniform", "eta", "edm"] = Field(
        "uniform", description="Time grid: uniform in t; 'eta' through mid_etas; 'edm' rho-schedule in eta.")
    mid_etas: list[Annotated[float, Field(gt=0)]] = Field(
        [1.4], description="Intermediate eta values for the 'eta' schedule when their count is steps-1 "
                           "(IMM App. I.2: 2 steps through eta = 1.4); each strictly inside (eta(eps), eta(T)).")
    rho: float = Field(7.0, gt=0, description="rho of the 'edm' schedule (Karras et al. 2022).")
    guidance: float = Field(
        1.0, ge=0, description="Classifier-free guidance weight w on the backbone output G, for labelled data "
                               "(IMM Eq. 14; 1 = off; the released ImageNet sampler uses 1.5).")

    sigma_max: Optional[float] = Field(
        None, gt=0, description="Start at the time of EDM noise level sigma_max (= sigma_d eta_t) when it is earlier "
                                "than T: where a consistency model's training ended (iCT: 80; OT-FM's T = 0.994 is "
                                "sigma 82.8); null = T.")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """The 'eta' schedule's mid_etas must be distinct and lie strictly inside (eta(eps), eta(start)) of
        the recipe's interpolant (when its Config gives that range; the run checks every interpolant's)."""
        if self.schedule != "eta":
            return []
        if len(set(self.mid_etas)) != len(self.mid_etas):
            return [(("sampler", "mid_etas"), f"must be distinct (got {self.mid_etas})")]
        ip = recipe.interpolant
        if not isinstance(ip, HasEtaRange):
            return []
        lo, hi = ip.eta_range()
        if self.sigma_max is not None:
            hi = min(hi, self.sigma_max / ip.sigma_d)
        bad = [e for e in self.mid_etas if not lo < e < hi]
        if bad:
            return [(("sampler", "mid_etas"), f"{bad} outside ({lo:.4g}, {hi:.4g}), the eta range of interpolant "
                                              f"{ip.name} between eps = {ip.eps} and T = {ip.T}")]
        return []


@hookimpl
def fewstep_register_samplers(registry):
    registry.add("pushforward", "fewstep.samplers:build_pushforward", SamplerConfig,
                 "x <- f(x, t_next, t): one flow-map step per step (IMM Alg. 2)")
    registry.add("restart", "fewstep.samplers:build_restart", SamplerConfig,
                 "jump to eps, re-noise to the next time (multistep consistency; IMM Alg. 5)")
    registry.add("euler", "fewstep.samplers:build_euler", SamplerConfig,
                 "Euler steps of the ODE with the flow map's velocity")
    registry.add("heun", "fewstep.samplers:build_heun", SamplerConfig,
                 "Heun (2nd order) steps of the ODE; 2 NFE per step")


# --- datasets (Configs in fewstep.builtin.datasets) -------------------------------------------
@hookimpl
def fewstep_register_datasets(registry):
    toy = "fewstep.builtin.factories:build_toy"
    registry.add("eight_gaussians", toy, EightGaussiansConfig, "8 Gaussians on a circle (2D toy)")
    registry.add("checkerboard", toy, CheckerboardConfig, "uniform on a checkerboard's black cells (2D toy)")
    registry.add("moons", toy, MoonsConfig, "two interleaved half circles (2D toy)")
    registry.add("spiral", toy, SpiralConfig, "2D swiss roll (2D toy)")
    registry.add("cifar10", "fewstep.builtin.factories:build_cifar10", CIFAR10Config,
                 "CIFAR-10, 3 x 32 x 32 (torchvision; downloaded to data.root)")
    registry.add("image_folder", "fewstep.builtin.factories:build_image_folder", ImageFolderConfig,
                 "a folder or list file of images (class subfolders = labels), centre-cropped, in memory or streamed")
    registry.add("latents", "fewstep.builtin.factories:build_latents", LatentsConfig,
                 "latents pre-encoded by `fewstep encode` (a VAE's posterior), normalised per channel")
    registry.add("digits", "fewstep.builtin.factories:build_digits", DigitsConfig,
                 "sklearn's bundled 1797 8x8 handwritten digits (images, no download)")


# --- metrics (Configs in fewstep.builtin.metrics) ---------------------------------------------
@hookimpl
def fewstep_register_metrics(registry):
    registry.add("sw2", "fewstep.builtin.factories:build_sw2", SW2Config,
                 "sliced Wasserstein-2 distance to fresh data (points)")
    registry.add("mmd", "fewstep.builtin.factories:build_mmd", MMDConfig,
                 "Gaussian-kernel MMD^2 (V-statistic) to fresh data (points)")
    registry.add("energy", "fewstep.builtin.factories:build_energy_distance", NoConfig,
                 "energy distance to fresh data (points)")
    registry.add("fid", "fewstep.builtin.factories:build_fid", FIDConfig,
                 "FID (and KID, IS, precision/recall) in Inception features, through torch-fidelity (images)")
    registry.add("fd_digits", "fewstep.builtin.factories:build_fd_digits", FDDigitsConfig,
                 "Frechet distance (and KID) in the features of a digits classifier: CPU-scale, not FID (images)")


# --- loggers -----------------------------------------------------------------------------------
@hookimpl
def fewstep_register_loggers(registry):
    registry.add("jsonl", "fewstep.run.tracking:JsonlLogger", NoConfig,
                 "metrics.jsonl in the run directory (always on: the run's own record)")
