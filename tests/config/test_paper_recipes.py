"""Every recipe in recipes/ validates (`fewstep check`), the paper recipes carry the paper's values,
and every bench file expands to valid recipes (`fewstep bench --check`)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.config import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL = sorted(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("bench_"))
BENCHES = sorted(RECIPES.glob("bench_*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_recipe_validates(path):
    res = runner.invoke(app, ["check", str(path)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: p.name)
def test_bench_file_expands_to_valid_recipes(path, tmp_path):
    res = runner.invoke(app, ["bench", str(path), "--check", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output


def test_imm_cifar_has_table_5s_cifar_column(regs):
    r = load_recipe(RECIPES / "imm_cifar.yaml", registries=regs)
    o, t = r.objective, r.train
    ip = r.interpolant
    assert (ip.name, ip.eps, ip.T, ip.sigma_d) == ("ot_fm", 0.006, 0.994, 0.5)
    assert (r.flowmap.parameterisation, r.flowmap.second_time, r.flowmap.time_scale) == ("simple_edm", "s", 1000)
    assert (o.group_size, o.kernel.name, o.mapping, o.k, o.a, o.b) == (4, "laplace", "eta", 15, 1, 5)
    assert (t.steps, t.batch_size, t.optimizer, t.lr, t.ema_decay) == (400_000, 4096, "radam", 1e-4, 0.9999)
    assert (r.network.dropout, r.data.xflip, r.sampler.name, r.sampler.mid_etas) == (0.2, True, "pushforward", [1.4])


def test_imm_cifar_builds_the_released_models_network_with_augmentation_labels(regs):
    """DDPM++ with IMM's second time embedding (the released CIFAR-10 model's 56,061,443 parameters) and EDM's
    augmentation pipe at p = 0.12 with its 9 labels as network input (+ 9 x 128 = 1,152)."""
    from fewstep.networks import NetworkSpec

    r = load_recipe(RECIPES / "imm_cifar.yaml", registries=regs)
    assert (r.data.augment, r.network.augment_dim) == (0.12, 9)
    net = regs.networks.build(r.network, NetworkSpec((3, 32, 32), None, r.flowmap.second_time != "none"))
    assert r.network.name == "ddpmpp" and sum(p.numel() for p in net.parameters()) == 56_061_443 + 1_152


def test_the_cifar_recipes_compare_at_equal_network_and_budget(regs):
    rs = {n: load_recipe(RECIPES / f"{n}_cifar.yaml", registries=regs) for n in ("imm", "ct", "fm")}
    for section in ("data", "network", "interpolant", "flowmap", "train", "eval"):
        dumps = {n: getattr(r, section).model_dump() for n, r in rs.items()}
        assert dumps["imm"] == dumps["ct"] == dumps["fm"], section


@pytest.mark.parametrize("size", ["s", "b", "l", "xl"])
def test_imagenet_dit_recipes_have_table_5s_imagenet_column(size, regs):
    r = load_recipe(RECIPES / f"imm_imagenet256_dit_{size}.yaml", registries=regs)
    o, t = r.objective, r.train
    assert (r.data.name, r.data.conditional, r.network.name, r.network.size, r.network.patch) == \
        ("latents", True, "dit", size.upper(), 2)
    assert (r.interpolant.eps, r.interpolant.T, r.flowmap.parameterisation, r.flowmap.second_time) == \
        (0.0, 0.994, "euler_fm", "s")
    assert (o.group_size, o.k, o.a, o.b, o.label_dropout) == (4, 12, 1, 4, 0.1)
    assert (t.steps, t.batch_size, t.optimizer, t.lr, t.ema_decay, t.precision) == \
        (1_200_000, 4096, "adamw", 1e-4, 0.9999, "tf32")
    assert (r.sampler.name, r.sampler.schedule, r.sampler.guidance) == ("pushforward", "uniform", 1.5)
    assert r.data.channel_mean[0] == 0.86488 and r.data.channel_std[0] == 4.85503674
