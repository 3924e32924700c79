"""The sCT plugin's Config (fewstep_sct/__init__.py): the TrigFlow mapping checks, the default sampler (1 step from
t_max = arctan(80/sigma_d), 2 steps through t_mid = 1.1), the recipes."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.flowmap import FlowMap
from fewstep.samplers import generate
from fewstep_sct import MID_ETA, TIME_SCALE, SCTConfig

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
RECIPE = """\
data: eight_gaussians
network: {name: mlp, width: 16, depth: 1, emb_dim: 8}
interpolant: {name: vp_cosine, sigma_d: 0.5, eps: 0.0, T: 0.99602}
flowmap: {parameterisation: simple_edm, second_time: none, time_scale: 1.5707963267948966}
objective: sct
"""


def test_config_defaults_and_unknown_fields():
    """The CIFAR-10 column of docs/objectives.md §4.3 (P_mean -1.0, P_std 1.4, c 0.1, H 10k)."""
    cfg = SCTConfig()
    assert (cfg.p_mean, cfg.p_std, cfg.tangent_c, cfg.warmup_steps) == (-1.0, 1.4, 0.1, 10_000)
    assert cfg.tangent_normalisation == "normalise" and cfg.adaptive_weighting and cfg.shared_dropout
    with pytest.raises(ValueError):
        SCTConfig(tangent_clip=1.0)


def test_time_scale_pi_over_2_makes_c_noise_the_trigflow_time():
    """c_noise = time_scale tau and t = pi tau / 2: time_scale = pi/2 gives c_noise = t (sCM's c_noise(t) = t)."""
    assert TIME_SCALE == math.pi / 2
    tau = torch.tensor([0.0, 0.3, 0.99602], dtype=torch.float64)
    assert torch.allclose(TIME_SCALE * tau, torch.atan(torch.tan(math.pi / 2 * tau)), rtol=1e-14)


@pytest.mark.parametrize("override, expect", [
    ("interpolant.name=ot_fm", "interpolant.name: sCT is TrigFlow (x_t = cos t x + sin t z): use vp_cosine "
                               "(got ot_fm)"),
    ("flowmap.parameterisation=identity", "flowmap.parameterisation: sCT's consistency function cos t x_t - sin t "
                                          "sigma_d F is simple_edm (got identity)"),
    ("flowmap.second_time=s", "flowmap.second_time: sCT trains only f(x_t, 0, t), a one-time model: use none (got s)"),
    ("flowmap.time_scale=1000", "flowmap.time_scale: sCM's c_noise(t) = t needs pi/2 = 1.5707963267948966"),
    ("objective.p_std=0", "objective.p_std: input should be greater than 0"),
    ("objective.tangent_normalisation=norm", "objective.tangent_normalisation: input should be 'normalise', 'clip'"),
    ("objective.warmup_steps=-1", "objective.warmup_steps: input should be greater than or equal to 0"),
])
def test_bad_configuration_is_one_line_exit_2(write, override, expect):
    res = CliRunner().invoke(app, ["check", str(write("sct.yaml", RECIPE)), "--set", override])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert expect in lines[0], lines[0]


def test_a_time_scale_within_1e_6_of_pi_over_2_is_accepted(write):
    res = CliRunner().invoke(app, ["check", str(write("sct.yaml", RECIPE)), "--set", "flowmap.time_scale=1.5707963"])
    assert res.exit_code == 0, res.output


class Recording(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, u, c, s=None, cond=None):
        self.seen.append(c.detach().clone())
        return torch.tanh(u) + c[:, None]


def test_default_sampler_is_one_step_from_t_max_and_two_through_t_mid_1_1(write, regs):
    """sCM §4.4 / Tables 4-5: x = f(z, 0, t_max), t_max = arctan(80 / sigma_d), z ~ N(0, sigma_d^2 I); 2 steps re-noise
    x = cos t_mid x_0 + sin t_mid z' at t_mid = 1.1 and apply f(x, 0, t_mid). The network sees c_noise = t."""
    from fewstep.config import load_recipe, recipe_dict

    recipe = load_recipe(write("sct.yaml", RECIPE), registries=regs)
    assert recipe_dict(recipe)["sampler"] == {"name": "restart", "schedule": "eta", "mid_etas": [MID_ETA], "rho": 7.0,
                                              "guidance": 1.0, "sigma_max": 80.0}
    sampler = regs.samplers.get("restart").build(recipe.sampler)
    ip = regs.interpolants.get("vp_cosine").build(recipe.interpolant)
    net = Recording()
    fm = FlowMap(net, ip, "simple_edm", "none", time_scale=recipe.flowmap.time_scale)
    t_max = math.atan(80 / 0.5)
    assert abs(ip.T * math.pi / 2 - t_max) < 1e-5  # the recipe's T = 0.99602 is sCM's t_max
    x1, nfe = generate(fm, sampler, 1, 6, (2,), generator=torch.Generator().manual_seed(0), device="cpu")
    z = ip.prior((6, 2), torch.Generator().manual_seed(0))
    (c,) = net.seen
    t = math.pi / 2 * ip.T
    assert nfe == 1 and torch.allclose(c, torch.full((1,), t))
    assert torch.allclose(x1, math.cos(t) * z - math.sin(t) * 0.5 * (torch.tanh(z / 0.5) + t), atol=1e-6)
    push = regs.samplers.get("pushforward").build(recipe.sampler.model_copy(update={"name": "pushforward"}))
    assert torch.equal(generate(fm, push, 1, 6, (2,), generator=torch.Generator().manual_seed(0))[0], x1)  # pushforward
    net.seen.clear()
    _, nfe = generate(fm, sampler, 2, 6, (2,), generator=torch.Generator().manual_seed(0), device="cpu")
    assert nfe == 2 and len(net.seen) == 2
    assert torch.allclose(net.seen[0], torch.full((6,), t)) and torch.allclose(net.seen[1], torch.full((6,), 1.1))


def test_recipes_share_their_sections_with_the_fm_recipes_and_use_the_trigflow_mapping(regs):
    from fewstep.config import load_recipe, recipe_dict

    for kind in ("toy", "digits"):
        sct, fm = (recipe_dict(load_recipe(RECIPES / f"{n}_{kind}.yaml", registries=regs)) for n in ("sct", "fm"))
        for section in ("data", "train", "eval"):
            assert sct[section] == fm[section], (kind, section)
        assert sct["network"] == fm["network"]  # the same MLP (built without the s branch: second_time none)
        assert sct["interpolant"] == {"name": "vp_cosine", "sigma_d": 0.5, "eps": 0.0, "T": 0.99602}
        assert sct["flowmap"] == {"parameterisation": "simple_edm", "second_time": "none", "time_scale": math.pi / 2}
        assert sct["sampler"]["name"] == "restart" and sct["sampler"]["mid_etas"] == [MID_ETA]
        assert sct["objective"]["warmup_steps"] < sct["train"]["steps"]  # short runs set H smaller than 10k
