"""Plugin discovery, isolation of failures, attribution and duplicates."""
from __future__ import annotations

import re
import sys
import textwrap
import types

import pytest

import fewstep
from fewstep.errors import PluginError, UnknownComponentError
from fewstep.plugins import load_registries


class KernelPlugin:
    """A plugin object registered directly, as a test or an application would."""

    __name__ = "kernel-plugin"

    class Config(fewstep.ComponentConfig):
        c: float = 1.0

    @fewstep.hookimpl
    def fewstep_register_kernels(self, registry):
        registry.add("imq", "fewstep.kernels:build_energy", self.Config, "inverse multiquadric")


def make_dist(site, module: str, body: str, *, version: str = "0.3.1", ep_name: str | None = None):
    """A real installed distribution: module + dist-info with a `fewstep` entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{module}-{version}.dist-info"  # the stem before '-' is the normalised name
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fewstep]\n{ep_name or module} = {module}\n")


GOOD = """
import fewstep

class Cfg(fewstep.ComponentConfig):
    depth: int = 2

@fewstep.hookimpl
def fewstep_register_networks(registry):
    registry.add("tiny", "fewstep.networks.mlp:build_mlp", Cfg, "a tiny network")
"""


def test_builtins_register_through_entry_points(regs):
    by_name = {p.name: p for p in regs.plugins}
    assert by_name["core"].source == "entry point" and by_name["core"].dist == "fewstep"
    assert by_name["fm"].provides == {"objectives": ["fm"]}
    assert regs.objectives.get("fm").plugin == "fm"
    assert {"ot_fm", "vp_cosine"} <= set(regs.interpolants.names())
    for kind in ("networks", "kernels", "samplers", "datasets", "metrics"):  # fewstep's own come from core
        assert all(e.plugin == "core" for e in regs.kind(kind) if by_name[e.plugin].dist == "fewstep")


def test_direct_plugin_object_is_registered_and_attributed():
    regs = load_registries(entry_points=False, plugins=[KernelPlugin()], env={})
    entry = regs.kernels.get("imq")
    assert entry.plugin == "kernel-plugin" and entry.description == "inverse multiquadric"
    assert "laplace" in regs.kernels  # the core is still there


def test_entry_point_from_dist_info(tmp_path, monkeypatch):
    make_dist(tmp_path, "fewstep_tinynet", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = load_registries(env={})
    info = {p.name: p for p in regs.plugins}["fewstep_tinynet"]
    assert (info.status, info.dist, info.version) == ("ok", "fewstep-tinynet", "0.3.1")
    assert info.provides == {"networks": ["tiny"]}
    assert regs.networks.get("tiny").plugin == "fewstep_tinynet"


def test_plugin_that_fails_to_import_is_recorded_and_others_work(tmp_path, monkeypatch, capsys):
    make_dist(tmp_path, "fewstep_broken", "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = load_registries(env={})
    info = {p.name: p for p in regs.plugins}["fewstep_broken"]
    assert info.status == "failed" and "ImportError: needs libfoo" in info.error
    assert "fm" in regs.objectives
    err = capsys.readouterr().err
    assert "plugin 'fewstep_broken' failed to load" in err
    load_registries(env={})  # warned about once per process
    assert "fewstep_broken" not in capsys.readouterr().err
    with pytest.raises(UnknownComponentError, match="fewstep_broken"):
        regs.objectives.get("nope")  # unknown names mention the broken plugin


def test_strict_mode_makes_a_failure_fatal(tmp_path, monkeypatch):
    make_dist(tmp_path, "fewstep_broken2", "raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="fewstep_broken2.*RuntimeError: boom"):
        load_registries(env={"FEWSTEP_STRICT_PLUGINS": "1"})


def test_duplicate_name_names_both_plugins():
    class Dup:
        __name__ = "dup-plugin"

        @fewstep.hookimpl
        def fewstep_register_objectives(self, registry):
            registry.add("fm", "x:y", fewstep.ComponentConfig, "another fm")

    with pytest.raises(PluginError, match="objective 'fm' is registered by two plugins: 'fm' and 'dup-plugin'"):
        load_registries(plugins=[Dup()], env={})


def test_misspelt_hook_and_raising_hook_are_reported_not_fatal():
    class Misspelt:
        __name__ = "misspelt"

        @fewstep.hookimpl
        def fewstep_register_kernal(self, registry):
            pass

    class Raises:
        __name__ = "raises"

        @fewstep.hookimpl
        def fewstep_register_kernels(self, registry):
            registry.add("half", "x:y", fewstep.ComponentConfig, "added before the failure")

        @fewstep.hookimpl
        def fewstep_register_samplers(self, registry):
            raise ValueError("bad sampler setup")

    class BadSignature:
        __name__ = "bad-signature"

        @fewstep.hookimpl
        def fewstep_register_metrics(self, registry, extra):
            pass

    regs = load_registries(entry_points=False, plugins=[Misspelt(), Raises(), BadSignature()], env={}, warn=False)
    info = {p.name: p for p in regs.plugins}
    assert info["misspelt"].status == "failed" and "fewstep_register_kernal" in info["misspelt"].error
    assert info["raises"].status == "failed" and "bad sampler setup" in info["raises"].error
    assert "half" not in regs.kernels  # withdrawn with its plugin
    assert info["bad-signature"].status == "failed"
    assert "euler" in regs.samplers


def test_fewstep_plugins_env_loads_an_uninstalled_module(monkeypatch):
    mod = types.ModuleType("my_dev_plugin")
    exec(textwrap.dedent(GOOD), mod.__dict__)
    monkeypatch.setitem(sys.modules, "my_dev_plugin", mod)
    regs = load_registries(entry_points=False, env={"FEWSTEP_PLUGINS": "my_dev_plugin"})
    info = {p.name: p for p in regs.plugins}["my_dev_plugin"]
    assert info.source == "FEWSTEP_PLUGINS" and regs.networks.get("tiny").plugin == "my_dev_plugin"


def test_unknown_name_lists_known_and_closest(regs):
    with pytest.raises(UnknownComponentError) as exc:
        regs.samplers.get("eulr")
    msg = str(exc.value)
    assert "unknown sampler 'eulr'; did you mean 'euler'?" in msg
    assert re.search(r"known: euler, heun, (\w+, )*pushforward, restart", msg)  # + any installed plugin's


def test_factories_are_lazy_strings_and_resolve(regs):
    entry = regs.interpolants.get("ot_fm")
    assert isinstance(entry.factory, str)  # registering imported no torch module
    ip = entry.build(entry.config())
    assert ip.sigma_d == 0.5 and (ip.eps, ip.T) == (0.006, 0.994)


def test_loading_plugins_and_checking_recipes_do_not_import_torch(tmp_path):
    import subprocess

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: eight_gaussians\nnetwork: mlp\nobjective: fm\n")
    code = ("import sys; from fewstep.config import load_recipe; load_recipe(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(recipe)], check=True)


def test_a_malformed_registration_fails_its_plugin_only():
    class NotPydantic:
        pass

    class Named(fewstep.ComponentConfig):
        name: str = "x"

    class BadConfig:
        __name__ = "bad-config"

        @fewstep.hookimpl
        def fewstep_register_kernels(self, registry):
            registry.add("k1", "x:y", NotPydantic, "config is not a model")

    class NameField:
        __name__ = "name-field"

        @fewstep.hookimpl
        def fewstep_register_samplers(self, registry):
            registry.add("s1", "x:y", Named, "declares name")

    class BadName:
        __name__ = "bad-name"

        @fewstep.hookimpl
        def fewstep_register_metrics(self, registry):
            registry.add("has space", "x:y", fewstep.ComponentConfig, "bad name")

    regs = load_registries(entry_points=False, plugins=[BadConfig(), NameField(), BadName()], env={}, warn=False)
    info = {p.name: p for p in regs.plugins}
    assert "config is not a pydantic model" in info["bad-config"].error
    assert "must not declare a field called 'name'" in info["name-field"].error
    assert "names use letters, digits" in info["bad-name"].error
    assert all(info[n].status == "failed" for n in ("bad-config", "name-field", "bad-name"))
    assert info["core"].status == "ok" and "laplace" in regs.kernels and "euler" in regs.samplers
