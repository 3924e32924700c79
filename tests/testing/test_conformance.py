"""The conformance kit over every component the installed plugins register (built-ins included),
and proof that each check can fail."""
from __future__ import annotations

import pytest
import torch

from fewstep import ComponentConfig
from fewstep.registry import Entry
from fewstep.testing import check_component, check_config, check_kernel, check_sampler, conformance_cases


@pytest.mark.parametrize("entry", conformance_cases())
def test_every_registered_component_conforms(entry):
    check_component(entry)


def _entry(kind, factory, config=ComponentConfig, name="x"):
    return Entry(kind, name, factory, config, "a test component", "test")


class Asymmetric:
    def __call__(self, a, b, w):
        d = (a[:, :, None] - b[:, None]).sum(-1)  # signed: k(a, b) != k(b, a)^T
        return torch.exp(-w.reshape(-1, 1, 1) * d)


class MiscountingSampler:
    """Calls the flow map twice per step but reports once."""

    name = "miscounting"

    def schedule(self, ip, n):
        from fewstep.samplers import uniform_schedule

        return uniform_schedule(ip, n)

    def __call__(self, fm, x, ts, cond=None, generator=None):
        for t, s in zip(ts[:-1], ts[1:]):
            fm.G(x, s, t)
            x = fm.f(x, s, t)
        fm.nfe -= len(ts) - 1
        return x


class Loose(ComponentConfig):
    model_config = {"extra": "allow"}


def test_only_missing_data_is_skipped_and_other_errors_fail(tmp_path):
    """The kit skips a dataset whose files are not on this machine, and fails one that errs otherwise."""
    from fewstep.errors import ConfigError, MissingResource
    from fewstep.testing import check_dataset

    def missing(cfg, sigma_d):
        raise MissingResource("data: not here; fetch it")

    def broken(cfg, sigma_d):
        raise ConfigError("data.root: a bug that reads like bad input")

    with pytest.raises(pytest.skip.Exception, match="not here"):
        check_dataset(_entry("datasets", missing))
    with pytest.raises(ConfigError, match="a bug"):
        check_dataset(_entry("datasets", broken))


def test_examples_build_real_image_folders_and_latents():
    """image_folder and latents are checked on files the kit writes, not skipped."""
    from fewstep.plugins import load_registries

    regs = load_registries(env={}, warn=False)
    for name in ("image_folder", "latents"):
        try:
            check_component(regs.datasets.get(name))
        except pytest.skip.Exception as exc:
            pytest.fail(f"{name} was skipped, not checked: {exc}")


def test_each_check_fails_on_a_broken_component():
    with pytest.raises(AssertionError, match="kernel 'x' .*k\\(a, a\\) is not symmetric"):
        check_kernel(_entry("kernels", lambda cfg: Asymmetric()))
    with pytest.raises(AssertionError, match="reported NFE 1 but the backbone saw 2 evaluations"):
        check_sampler(_entry("samplers", lambda cfg: MiscountingSampler()))
    with pytest.raises(AssertionError, match="sampler 'x' .*fewstep.protocols.Sampler"):
        check_sampler(_entry("samplers", lambda cfg: object()))
    with pytest.raises(AssertionError, match="accepts unknown fields"):
        check_config(_entry("kernels", lambda cfg: None, Loose))
    with pytest.raises(AssertionError, match="no description"):
        check_config(Entry("kernels", "x", lambda cfg: None, ComponentConfig, " ", "test"))
