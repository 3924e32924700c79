"""fewstep.builtin: Config validators, the sampler's mid_etas check, eta ranges, registrations."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from fewstep.builtin import (
    CosineConfig,
    DiTConfig,
    InterpolantConfig,
    OTFMConfig,
    SamplerConfig,
    UNetConfig,
)
from fewstep.errors import RecipeError
from fewstep.testing import tiny_recipe


# --- interpolants --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [InterpolantConfig, OTFMConfig, CosineConfig])
def test_eps_must_be_below_t(cls):
    assert cls(eps=0.1, T=0.2).eps == 0.1
    for eps, T in ((0.5, 0.5), (0.9, 0.1)):
        with pytest.raises(ValidationError, match=f"eps must be smaller than T \\(got eps={eps}, T={T}\\)"):
            cls(eps=eps, T=T)


def test_cosine_defaults_to_t_0_996():
    assert (OTFMConfig().T, CosineConfig().T) == (0.994, 0.996)


@pytest.mark.parametrize(("eps", "T"), [(0.006, 0.994), (0.0, 0.5), (0.2, 0.9)])
def test_ot_fm_eta_range_is_t_over_1_minus_t(eps, T):
    lo, hi = OTFMConfig(eps=eps, T=T).eta_range()
    assert lo == pytest.approx(eps / (1 - eps), rel=1e-15) and hi == pytest.approx(T / (1 - T), rel=1e-15)


@pytest.mark.parametrize(("eps", "T"), [(0.006, 0.996), (0.0, 0.5), (0.2, 0.9)])
def test_cosine_eta_range_is_tan_of_pi_t_over_2(eps, T):
    lo, hi = CosineConfig(eps=eps, T=T).eta_range()
    assert lo == pytest.approx(math.tan(math.pi * eps / 2), abs=1e-15)
    assert hi == pytest.approx(math.tan(math.pi * T / 2), rel=1e-14)
    assert CosineConfig(T=0.5).eta_range()[1] == pytest.approx(1.0)  # tan(pi/4)


def test_eta_ranges_at_t_1_are_infinite():
    assert OTFMConfig(T=1.0).eta_range()[1] == math.inf and CosineConfig(T=1.0).eta_range()[1] == math.inf


# --- networks ------------------------------------------------------------------------------------
def test_unet_needs_one_attention_flag_per_level():
    UNetConfig(channels=[32, 64], attention=[False, True], norm_groups=32)
    with pytest.raises(ValidationError, match=r"attention needs one flag per level of channels \(2\), got 3"):
        UNetConfig(channels=[32, 64], attention=[False, True, False])


def test_unet_norm_groups_must_divide_every_channel_count():
    with pytest.raises(ValidationError, match=r"norm_groups 32 must divide every channel count \(not \[48\]\)"):
        UNetConfig(channels=[64, 48], attention=[False, False])
    assert UNetConfig(channels=[48, 96], attention=[False, False], norm_groups=16).norm_groups == 16


def test_dit_sizes_and_overrides():
    DiTConfig()  # DiT-B
    DiTConfig(size="XL", heads=8)  # 1152 / 8
    DiTConfig(size=None, hidden=8, depth=1, heads=2)
    with pytest.raises(ValidationError, match="size is null: give hidden, depth and heads"):
        DiTConfig(size=None, hidden=8, heads=2)
    with pytest.raises(ValidationError, match=r"hidden \(768\) must be divisible by heads \(7\) and by 4"):
        DiTConfig(size="B", heads=7)
    with pytest.raises(ValidationError, match=r"hidden \(18\) must be divisible by heads \(3\) and by 4"):
        DiTConfig(size=None, hidden=18, depth=1, heads=3)  # 18 / 3 works, 18 / 4 does not
    with pytest.raises(ValidationError, match=r"hidden \(390\) must be divisible by heads \(6\) and by 4"):
        DiTConfig(size="S", hidden=390)  # S's 6 heads divide 390, the position embedding needs 4


# --- the sampler's recipe check ------------------------------------------------------------------
def _recipe(regs, sampler, interpolant=None, flowmap=None):
    sections = {"sampler": {"name": "pushforward", **sampler}}
    if interpolant:
        sections["interpolant"] = interpolant
    if flowmap:
        sections["flowmap"] = flowmap
    return tiny_recipe(regs, **sections)


def test_mid_etas_inside_the_eta_range_pass(regs):
    recipe = _recipe(regs, {"schedule": "eta", "mid_etas": [0.5, 1.4, 100.0]})  # ot_fm: (0.00604, 165.7)
    assert recipe.sampler.check_recipe(recipe) == []


def test_mid_etas_must_be_distinct(regs):
    with pytest.raises(RecipeError, match=r"sampler.mid_etas: must be distinct \(got \[1.4, 1.4\]\)"):
        _recipe(regs, {"schedule": "eta", "mid_etas": [1.4, 1.4]})


@pytest.mark.parametrize("bad", [0.001, 200.0])
def test_mid_etas_outside_the_interpolants_eta_range_are_refused(regs, bad):
    with pytest.raises(RecipeError, match=rf"sampler.mid_etas: \[{bad}\] outside \(0.006036, 165.7\), the eta range "
                                          r"of interpolant ot_fm between eps = 0.006 and T = 0.994"):
        _recipe(regs, {"schedule": "eta", "mid_etas": [1.4, bad]})


def test_the_range_is_the_recipes_interpolant(regs):
    cosine = {"name": "vp_cosine", "T": 0.5}  # eta(T) = tan(pi / 4) = 1
    flowmap = {"parameterisation": "simple_edm"}
    assert _recipe(regs, {"schedule": "eta", "mid_etas": [0.9]}, cosine, flowmap).sampler.mid_etas == [0.9]
    with pytest.raises(RecipeError, match=r"\[1.4\] outside \(0.009425, 1\), the eta range of interpolant vp_cosine"):
        _recipe(regs, {"schedule": "eta", "mid_etas": [1.4]}, cosine, flowmap)


@pytest.mark.parametrize("schedule", ["uniform", "edm"])
def test_mid_etas_are_ignored_by_other_schedules(regs, schedule):
    recipe = _recipe(regs, {"schedule": schedule, "mid_etas": [1000.0, 1000.0]})
    assert recipe.sampler.check_recipe(recipe) == []


def test_an_interpolant_without_a_closed_form_range_is_left_to_the_run(regs):
    cfg = SamplerConfig(schedule="eta", mid_etas=[1000.0])
    recipe = SimpleNamespace(interpolant=SimpleNamespace(name="custom", eps=0.0, T=1.0))  # no eta_range()
    assert cfg.check_recipe(recipe) == []
    recipe.interpolant = regs.interpolants.get("ot_fm").model()(name="ot_fm")
    (loc, msg), = cfg.check_recipe(recipe)
    assert loc == ("sampler", "mid_etas") and msg.startswith("[1000.0] outside (0.006036, 165.7)")


def test_mid_etas_must_be_positive():
    with pytest.raises(ValidationError):
        SamplerConfig(mid_etas=[0.0])


# --- what the core registers ---------------------------------------------------------------------
def test_the_core_registers_its_components_under_the_core_plugin():
    from fewstep.plugins import load_registries

    regs = load_registries(entry_points=False, env={}, warn=False)
    expected = {"interpolants": ["ot_fm", "vp_cosine"], "networks": ["ddpmpp", "dit", "mlp", "unet"],
                "kernels": ["energy", "laplace", "rbf", "smooth_laplace"],
                "samplers": ["euler", "heun", "pushforward", "restart"],
                "datasets": ["checkerboard", "cifar10", "digits", "eight_gaussians", "image_folder", "latents",
                             "moons", "spiral"],
                "metrics": ["energy", "fd_digits", "fid", "mmd", "sw2"], "objectives": [], "loggers": ["jsonl"]}
    assert {reg.kind: reg.names() for reg in regs} == expected
    assert {e.plugin for reg in regs for e in reg} == {"core"}
    assert all(isinstance(e.factory, str) for reg in regs for e in reg)  # imported only when built
