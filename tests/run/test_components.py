"""fewstep.run.components: building a recipe's components, the device, threads and schedule checks."""
from __future__ import annotations

import os

import pytest
import torch

from fewstep.errors import ConfigError
from fewstep.flowmap import EulerFM, FlowMap, SimpleEDM
from fewstep.interpolants import OTFM, VPCosine
from fewstep.networks.mlp import MLP
from fewstep.run.components import build_components, check_schedules, flowmap_for, resolve_device, set_threads
from fewstep.testing import tiny_recipe


def test_build_components_builds_every_part(regs):
    from fewstep.data.toy import ToyDataset
    from fewstep.samplers import Euler
    from fewstep_fm.objective import FlowMatching

    recipe = tiny_recipe(regs, interpolant={"name": "ot_fm", "sigma_d": 0.7, "eps": 0.01, "T": 0.98})
    comps = build_components(recipe, regs, "cpu")
    assert comps.recipe is recipe and comps.device == torch.device("cpu")
    assert isinstance(comps.dataset, ToyDataset) and comps.dataset.name == "eight_gaussians"
    ip = comps.interpolant
    assert isinstance(ip, OTFM) and (ip.sigma_d, ip.eps, ip.T) == (0.7, 0.01, 0.98)
    assert comps.dataset.sigma_d == 0.7  # the data is scaled to the interpolant's sigma_d
    fm = comps.flowmap
    assert isinstance(fm, FlowMap) and isinstance(fm.param, EulerFM) and fm.second_time == "s"
    assert fm.interpolant is ip and fm.time_scale == 1000.0 and fm.num_classes is None
    assert isinstance(comps.net, MLP) and comps.net is fm.net
    assert comps.net.body[0].out_features == 16 and comps.net.cond.s_embed is not None
    assert isinstance(comps.objective, FlowMatching) and isinstance(comps.sampler, Euler)
    assert build_components(recipe, regs, "cpu", objective=False).objective is None


def test_the_network_follows_the_flowmap_section_and_the_data(regs):
    recipe = tiny_recipe(regs, data={"name": "digits", "conditional": True},
                         interpolant={"name": "vp_cosine"},
                         flowmap={"parameterisation": "simple_edm", "second_time": "none", "time_scale": 250.0})
    comps = build_components(recipe, regs, "cpu")
    assert isinstance(comps.interpolant, VPCosine) and isinstance(comps.flowmap.param, SimpleEDM)
    assert comps.net.shape == (1, 8, 8) and comps.flowmap.num_classes == 10
    assert comps.net.cond.s_embed is None  # second_time none: no s branch
    assert comps.net.cond.label_embed.num_embeddings == 11  # 10 digits + the null class
    assert comps.flowmap.time_scale == 250.0


def test_initial_weights_follow_the_recipe_seed(regs):
    def weights(seed):
        comps = build_components(tiny_recipe(regs, train={"seed": seed, "steps": 10, "batch_size": 16}), regs, "cpu")
        return [p.detach().clone() for p in comps.net.parameters()]

    torch.manual_seed(123)  # whatever the global state before
    a = weights(1)
    torch.rand(100)
    b, c = weights(1), weights(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_a_run_aware_objective_is_set_up_with_the_recipe(regs):
    recipe = tiny_recipe(regs, objective={"name": "ct", "stage_images": None}, train={"steps": 37, "batch_size": 16})
    obj = build_components(recipe, regs, "cpu").objective
    assert obj.total_steps == 37 and obj.stage_every == 37 // 8


def test_the_device_comes_from_the_recipe_unless_given(regs, monkeypatch):
    recipe = tiny_recipe(regs, train={"device": "cuda", "steps": 10, "batch_size": 16})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device: 'cuda' requested but CUDA is not available"):
        build_components(recipe, regs)
    assert build_components(recipe, regs, "cpu").device.type == "cpu"


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device() == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"train.device: '{name}' requested but CUDA is not available"):
            resolve_device(name)
    for name in ("gpu", "cuda:x", ""):
        with pytest.raises(ConfigError, match=f"train.device: '{name}' is not a device"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        set_threads(None)
        assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
        set_threads(2)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads(3)
        assert os.environ["OMP_NUM_THREADS"] == "1"  # a value the user set is kept
    finally:
        torch.set_num_threads(before)


class _Sampler:
    name = "picky"

    def schedule(self, ip, n):
        if n == 3:
            raise ValueError("three is not allowed")
        return torch.linspace(ip.T, ip.eps, n + 1)


def test_check_schedules_turns_a_bad_grid_into_a_config_error():
    check_schedules(_Sampler(), OTFM(), [1, 2, 4])
    with pytest.raises(ConfigError, match="sampler: the 3-step schedule: three is not allowed"):
        check_schedules(_Sampler(), OTFM(), [1, 2, 3])


def test_a_recipe_whose_eta_schedule_the_interpolant_cannot_give_is_refused(regs):
    # vp_cosine with T = 0.2 has eta(T) = tan(0.1 pi) = 0.32: recipe validation would refuse mid_etas = 1.4,
    # so it is assigned after validation, leaving the run's own check to catch it
    recipe = tiny_recipe(regs, interpolant={"name": "vp_cosine", "T": 0.2},
                         flowmap={"parameterisation": "simple_edm"},
                         sampler={"name": "pushforward", "schedule": "eta", "mid_etas": [0.1]},
                         eval={"steps": [1, 2], "reference_steps": None})
    build_components(recipe, regs, "cpu")  # 0.1 lies inside (eta(eps), eta(T))
    recipe.sampler.mid_etas = [1.4]
    with pytest.raises(ConfigError, match=r"sampler: the 2-step schedule: mid_etas \[1.4\] must lie strictly inside"):
        build_components(recipe, regs, "cpu")


def test_flowmap_for_wraps_other_weights_the_same_way(regs):
    comps = build_components(tiny_recipe(regs), regs, "cpu")
    other = MLP((2,), width=16, depth=1, emb_dim=8)
    fm = flowmap_for(comps, other)
    assert fm.net is other and fm.interpolant is comps.interpolant
    assert fm.param.name == comps.flowmap.param.name and fm.second_time == comps.flowmap.second_time
