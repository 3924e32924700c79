"""References from one component's Config to another registered component (component_ref/build_ref)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

import fewstep
from fewstep.config import recipe_dict, recipe_from_dict
from fewstep.errors import RecipeError, UnknownComponentError
from fewstep.kernels import Energy, Laplace
from fewstep.plugins import load_registries
from fewstep.registry import Ref, build_ref, component_ref, ref_fields

KernelRef = Ref("kernels")


class WithKernel(fewstep.ComponentConfig):
    kernel: KernelRef = component_ref("kernels", "laplace", "the kernel")
    scale: float = 1.0


class Plugin:
    """An objective whose Config names a kernel; its factory builds the kernel it names."""

    __name__ = "ref-plugin"

    @fewstep.hookimpl
    def fewstep_register_objectives(self, registry):
        registry.add("uses_kernel", lambda cfg, ip: build_ref(cfg.kernel, "kernels"), WithKernel, "test")


@pytest.fixture
def regs():
    import fewstep.builtin

    return load_registries(entry_points=False, plugins=[fewstep.builtin, Plugin()], env={})


def recipe(regs, kernel=None):
    data = {"data": "eight_gaussians", "network": "mlp", "objective": {"name": "uses_kernel"}}
    if kernel is not None:
        data["objective"]["kernel"] = kernel
    return recipe_from_dict(data, regs, path="r.yaml")


def test_config_accepts_a_name_or_a_mapping_and_defaults():
    assert WithKernel().kernel == {"name": "laplace"}
    assert WithKernel(kernel="energy").kernel == {"name": "energy"}
    assert WithKernel(kernel={"name": "laplace", "eps": 1e-6}).kernel["eps"] == 1e-6
    assert ref_fields(WithKernel()) == [("kernel", "kernels")]
    with pytest.raises(ValidationError, match="give a registered name"):
        WithKernel(kernel={"eps": 1e-6})
    with pytest.raises(ValueError, match="unknown registry kind"):
        component_ref("kernel", "laplace", "typo in the kind")


@pytest.mark.parametrize("spec, cls, eps", [(None, Laplace, 1e-8), ("energy", Energy, None),
                                            ({"name": "laplace", "eps": 1e-3}, Laplace, 1e-3)])
def test_recipe_validates_the_reference_and_the_factory_builds_it(regs, spec, cls, eps):
    r = recipe(regs, spec)
    kernel = regs.objectives.build(r.objective, None)
    assert isinstance(kernel, cls)
    if eps is not None:
        assert kernel.eps == eps
    dumped = recipe_dict(r)["objective"]["kernel"]
    assert list(dumped)[0] == "name" and dumped["name"] == kernel.name


def test_unknown_name_and_bad_options_are_recipe_errors(regs):
    with pytest.raises(RecipeError) as err:
        recipe(regs, "lapalce")
    assert err.value.problems == ["r.yaml objective.kernel: unknown kernel 'lapalce'; did you mean 'laplace'? "
                                  "(known: energy, laplace, rbf, smooth_laplace)"]
    with pytest.raises(RecipeError) as err:
        recipe(regs, {"name": "laplace", "eps": 0, "extra": 1})
    assert sorted(err.value.problems) == ["r.yaml objective.kernel.eps: input should be greater than 0",
                                          "r.yaml objective.kernel.extra: unknown field"]


def test_build_ref_from_python_uses_the_given_registries(regs):
    assert isinstance(build_ref("energy", "kernels", registries=regs), Energy)
    assert build_ref({"name": "laplace", "eps": 0.5}, "kernels", registries=regs).eps == 0.5
    with pytest.raises(UnknownComponentError, match="unknown kernel 'nope'"):
        build_ref("nope", "kernels", registries=regs)
    with pytest.raises(fewstep.errors.PluginError, match="expected a sampler, got kernel 'laplace'"):
        build_ref(recipe(regs).objective.kernel, "samplers")


def test_missing_package_is_a_note_naming_the_extra_and_require_raises_it_as_one_line():
    from fewstep.errors import ConfigError
    from fewstep.registry import missing_package, require_resources

    assert missing_package("json", "x", "the x logger", ("train", "loggers")) == []
    notes = missing_package("no_such_module_fewstep", "tb", "the tb logger", ("train", "loggers"))
    assert notes == [(("train", "loggers"),
                      "the tb logger needs the no_such_module_fewstep package: pip install 'fewstep[tb]'")]

    class Cfg:
        def resources(self):
            return notes

    with pytest.raises(ConfigError, match=r"^train\.loggers: the tb logger needs the no_such_module_fewstep "
                                          r"package: pip install 'fewstep\[tb\]'$"):
        require_resources(Cfg())
