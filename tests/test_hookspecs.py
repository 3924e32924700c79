"""fewstep.hookspecs: one register hook per registry kind, and the hookimpl marker plugins use."""
from __future__ import annotations

import inspect

import pluggy
import pytest

from fewstep import hookspecs
from fewstep.registry import KINDS


def _specs() -> dict[str, object]:
    return {name: fn for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")}


def test_one_hookspec_per_registry_kind():
    assert hookspecs.PROJECT == "fewstep"
    assert set(_specs()) == {f"fewstep_register_{kind}" for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_each_hook_takes_only_the_registry(kind):
    fn = getattr(hookspecs, f"fewstep_register_{kind}")
    assert list(inspect.signature(fn).parameters) == ["registry"]
    assert fn.__doc__  # the contract is written down in the spec


def test_hookimpl_marks_a_function_that_pluggy_registers_and_calls():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    seen = []

    class Plugin:
        @hookspecs.hookimpl
        def fewstep_register_kernels(self, registry):
            seen.append(("kernels", registry))

        def fewstep_register_samplers(self, registry):  # not marked: not a hook implementation
            seen.append(("samplers", registry))

    plugin = Plugin()
    pm.register(plugin, name="p")
    assert [c.name for c in pm.get_hookcallers(plugin)] == ["fewstep_register_kernels"]
    token = object()
    pm.hook.fewstep_register_kernels(registry=token)
    pm.hook.fewstep_register_samplers(registry=token)
    assert seen == [("kernels", token)]


def test_another_projects_marker_is_not_a_fewstep_hook():
    other = pluggy.HookimplMarker("not_fewstep")
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)

    class Plugin:
        @other
        def fewstep_register_kernels(self, registry):
            raise AssertionError("called")

    pm.register(Plugin())
    pm.hook.fewstep_register_kernels(registry=None)  # nothing registered under fewstep's marker


def test_a_hookimpl_fills_the_registry_through_load_registries():
    from fewstep import ComponentConfig
    from fewstep.plugins import load_registries

    class Plugin:
        @hookspecs.hookimpl
        def fewstep_register_metrics(self, registry):
            registry.add("zero", lambda cfg: (lambda x, y, g=None: 0.0), ComponentConfig, "always 0")

    regs = load_registries(entry_points=False, plugins=[("spec_test", Plugin())], env={}, warn=False)
    entry = regs.metrics.get("zero")
    assert entry.plugin == "spec_test" and entry.description == "always 0"
