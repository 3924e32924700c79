"""fewstep.protocols: built-in components satisfy their kind's protocol; optional capabilities are detected."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep import protocols as P
from fewstep.errors import MissingResource
from fewstep.interpolants import Interpolant
from fewstep.networks import NetworkSpec
from fewstep.plugins import load_registries

REGS = load_registries(env={}, warn=False)
KIND_PROTOCOL = {"objectives": P.Objective, "samplers": P.Sampler, "kernels": P.Kernel, "metrics": P.Metric,
                 "datasets": P.Dataset, "networks": P.Network}

# cheap settings for the built-in networks, and the sample shape each is built for
NETWORKS = {"mlp": ({"width": 8, "depth": 1, "emb_dim": 4}, (2,)),
            "unet": ({"channels": [8, 16], "attention": [False, True], "layers_per_block": 1, "norm_groups": 4,
                      "head_dim": 4, "dropout": 0.0}, (3, 8, 8)),
            "dit": ({"size": None, "hidden": 8, "depth": 1, "heads": 2}, (4, 8, 8))}


def _cfg(entry, **fields):
    return entry.model().model_validate({"name": entry.name, **fields})


def _interpolant(name="ot_fm"):
    return REGS.interpolants.build(_cfg(REGS.interpolants.get(name)))


def _objective(name, **fields):
    entry = REGS.objectives.get(name)
    return entry.build(_cfg(entry, **fields), _interpolant())


def _dataset(name, folder, **fields):
    entry = REGS.datasets.get(name)
    if not fields and isinstance(entry.config, P.HasExample):
        fields = entry.config.example(folder)
    return entry.build(_cfg(entry, **fields), 0.5)


def _network(name):
    fields, shape = NETWORKS[name]
    entry = REGS.networks.get(name)
    return entry.build(_cfg(entry, **fields), NetworkSpec(shape))


def _names(kind):
    return REGS.kind(kind).names()


# --- every registered component satisfies its kind's protocol ------------------------------------
@pytest.mark.parametrize("name", _names("objectives"))
def test_objectives_satisfy_objective(name):
    assert isinstance(_objective(name), P.Objective)


@pytest.mark.parametrize("kind", ["samplers", "kernels", "metrics"])
def test_samplers_kernels_and_metrics_satisfy_their_protocols(kind):
    for entry in REGS.kind(kind):
        comp = entry.build(_cfg(entry))
        assert isinstance(comp, KIND_PROTOCOL[kind]), entry.name
        if kind == "samplers":
            assert comp.name == entry.name
        if kind == "metrics":
            assert comp.kind in ("points", "images")


@pytest.mark.parametrize("name", _names("datasets"))
def test_datasets_satisfy_dataset(name, tmp_path):
    try:
        data = _dataset(name, tmp_path)
    except MissingResource as exc:  # CIFAR-10 is never downloaded by the tests
        pytest.skip(str(exc))
    assert isinstance(data, P.Dataset)
    assert tuple(data.sample(4, torch.Generator().manual_seed(0)).x.shape) == (4, *data.shape)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_built_in_networks_satisfy_network(name):
    assert isinstance(_network(name), P.Network)


@pytest.mark.parametrize("name", _names("interpolants"))
def test_interpolants_derive_from_the_interpolant_base(name):
    assert isinstance(_interpolant(name), Interpolant)


# --- optional capabilities -----------------------------------------------------------------------
def test_stateful_and_run_aware_objectives():
    imm_ema, ct, fm = _objective("imm", target="ema"), _objective("ct"), _objective("fm")
    assert isinstance(imm_ema, P.Stateful) and isinstance(ct, P.Stateful)
    assert not isinstance(fm, P.Stateful)
    assert isinstance(ct, P.RunAware)
    assert not isinstance(fm, P.RunAware) and not isinstance(imm_ema, P.RunAware)


def test_grouped_times_is_declared_by_mlp_and_dit_and_refused_by_the_unet():
    declared = {name: (isinstance(net, P.GroupedTimes), net.grouped_times)
                for name, net in ((n, _network(n)) for n in NETWORKS)}
    assert declared == {"mlp": (True, True), "dit": (True, True), "unet": (True, False)}
    assert not isinstance(torch.nn.Linear(2, 2), P.GroupedTimes)


def test_image_capabilities_of_datasets(tmp_path):
    digits = _dataset("digits", tmp_path)
    assert isinstance(digits, P.ImageData) and isinstance(digits, P.StoredImages)
    latents = _dataset("latents", tmp_path / "latents")
    assert isinstance(latents, P.ImageData) and not isinstance(latents, P.StoredImages)  # no originals
    for name in ("eight_gaussians", "checkerboard", "moons", "spiral"):
        toy = _dataset(name, tmp_path)
        assert not isinstance(toy, P.ImageData) and not isinstance(toy, P.StoredImages), name


def test_objective_configs_with_a_default_sampler():
    for name in ("fm", "imm", "ct"):
        config = REGS.objectives.get(name).config
        assert isinstance(config, P.HasDefaultSampler), name  # the class
        assert isinstance(_cfg(REGS.objectives.get(name)), P.HasDefaultSampler), name  # and an instance
        assert _cfg(REGS.objectives.get(name)).default_sampler["name"] in REGS.samplers, name
    assert not isinstance(REGS.kernels.get("laplace").config, P.HasDefaultSampler)


@pytest.mark.parametrize(("name", "eps", "T"), [("ot_fm", 0.006, 0.994), ("ot_fm", 0.0, 0.9),
                                                ("vp_cosine", 0.006, 0.996), ("vp_cosine", 0.01, 0.5)])
def test_eta_range_of_interpolant_configs_matches_the_built_interpolant(name, eps, T):
    entry = REGS.interpolants.get(name)
    cfg = _cfg(entry, eps=eps, T=T)
    assert isinstance(cfg, P.HasEtaRange)
    ip = entry.build(cfg)
    want = ip.eta(torch.tensor([eps, T], dtype=torch.float64)).tolist()
    assert cfg.eta_range() == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_other_config_protocols():
    cfg = {name: REGS.kind(kind).get(name).config for kind, name in
           [("samplers", "pushforward"), ("objectives", "imm"), ("networks", "mlp"), ("networks", "unet"),
            ("networks", "dit"), ("datasets", "image_folder"), ("datasets", "latents"), ("datasets", "digits"),
            ("kernels", "laplace")]}
    assert isinstance(_cfg(REGS.samplers.get("pushforward")), P.ChecksRecipe)
    assert isinstance(_cfg(REGS.objectives.get("imm")), P.ChecksRecipe)
    assert not isinstance(_cfg(REGS.networks.get("mlp")), P.ChecksRecipe)
    assert isinstance(cfg["image_folder"], P.HasExample) and isinstance(cfg["latents"], P.HasExample)
    assert not isinstance(cfg["digits"], P.HasExample)
    assert isinstance(cfg["unet"], P.HasExampleShape) and isinstance(cfg["dit"], P.HasExampleShape)
    assert not isinstance(cfg["mlp"], P.HasExampleShape)
    assert not isinstance(cfg["laplace"], P.HasEtaRange)


# --- a missing member means not an instance ------------------------------------------------------
class _NoCall:
    name = "x"

    def schedule(self, ip, n):
        return torch.zeros(n + 1)


class _NoName:
    def schedule(self, ip, n):
        return torch.zeros(n + 1)

    def __call__(self, fm, x, ts, cond=None, generator=None):
        return x


class _PointsNoSample:
    kind, shape, num_classes = "points", (2,), None


class _NoLabels:
    def __len__(self):
        return 0

    def originals(self, start, stop):
        return torch.zeros(0)


class _HalfState:
    def state_dict(self):
        return {}


def test_an_object_missing_a_member_is_not_an_instance():
    assert not isinstance(_NoCall(), P.Sampler) and not isinstance(_NoName(), P.Sampler)
    _NoName.name = "ok"
    try:
        assert isinstance(_NoName(), P.Sampler)  # the same class with every member is one
    finally:
        del _NoName.name
    assert not isinstance(_PointsNoSample(), P.Dataset)
    assert not isinstance(_NoLabels(), P.StoredImages)
    assert not isinstance(_HalfState(), P.Stateful)
    assert not isinstance(object(), P.Objective) and not isinstance(object(), P.Kernel)
    assert not isinstance(object(), P.Metric) and not isinstance(object(), P.RunAware)


def test_eta_range_is_infinite_at_t_equal_1():
    assert REGS.interpolants.get("ot_fm").config(T=1.0).eta_range()[1] == math.inf
    assert REGS.interpolants.get("vp_cosine").config(T=1.0).eta_range()[1] == math.inf
