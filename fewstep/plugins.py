"""Finding, loading and listing plugins; building the registries from them.

Sources, in order: the ``fewstep`` entry-point group of installed distributions (the built-ins
too), then the modules named in ``FEWSTEP_PLUGINS=mod[:attr],...``, then plugin objects passed by
the caller (tests). Each plugin is loaded and called in isolation: one that fails to import, uses
an unknown hook or raises in a hook is recorded, warned about once on stderr, and the rest keep
working. ``FEWSTEP_STRICT_PLUGINS=1`` makes any such failure fatal. Two plugins registering one
name is always an error that names both.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable, Mapping

import pluggy

import fewstep.hookspecs as hookspecs
from fewstep.errors import PluginError
from fewstep.registry import KINDS, Registrar, Registries, resolve
from fewstep.registry import build_ref as _build_ref

GROUP = "fewstep"
CORE_MODULE = "fewstep.builtin"
_warned: set[str] = set()


@dataclass
class PluginInfo:
    """What ``fewstep plugins`` shows about one plugin."""

    name: str
    module: str
    source: str  # "entry point", "FEWSTEP_PLUGINS" or "direct"
    dist: str | None = None
    version: str | None = None
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class _Loader:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.objects: dict[str, Any] = {}

    def add(self, info: PluginInfo, load: Any) -> None:
        """Load (call ``load()`` if callable-loader) and register one plugin, recording failures."""
        if info.name in self.objects or any(i.name == info.name for i in self.infos):
            return  # the same plugin reached twice (e.g. entry point and FEWSTEP_PLUGINS)
        self.infos.append(info)
        try:
            obj = load()
            if any(o is obj for o in self.objects.values()):
                self.infos.remove(info)
                return
            unknown = [
                n for n in dir(obj)
                if n.startswith("fewstep_") and callable(getattr(obj, n, None))
                and self.pm.parse_hookimpl_opts(obj, n) is not None
                and not hasattr(hookspecs, n)
            ]
            if unknown:
                raise PluginError(f"unknown hook {unknown[0]!r} (known: fewstep_register_<kind>)")
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party plugin is recorded
            info.status, info.error = "failed", _describe(exc)
            return
        self.objects[info.name] = obj
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(obj) or [])

    def fill(self, regs: Registries) -> None:
        """Call every plugin's register hooks, one plugin at a time, with attribution."""
        by_name = {i.name: i for i in self.infos}
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"fewstep_register_{kind}")
            for impl in caller.get_hookimpls():  # registration order
                info = by_name[impl.plugin_name]
                if info.status != "ok":
                    continue
                registrar = Registrar(regs.kind(kind), impl.plugin_name)
                try:
                    impl.function(registry=registrar)
                except Exception as exc:  # noqa: BLE001
                    self._fail(regs, info, exc)
                    continue
                added = registrar.commit()  # PluginError on a duplicate name: fatal, names both
                if added:
                    info.provides[kind] = sorted(e.name for e in added)

    @staticmethod
    def _fail(regs: Registries, info: PluginInfo, exc: BaseException) -> None:
        info.status, info.error = "failed", _describe(exc)
        info.provides = {}
        for reg in regs:  # withdraw what the plugin registered before it failed
            for name in [n for n, e in reg.entries.items() if e.plugin == info.name]:
                del reg.entries[name]


def _entry_points() -> Iterable[metadata.EntryPoint]:
    seen = set()
    for ep in metadata.entry_points(group=GROUP):
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            yield ep


def load_registries(
    *,
    entry_points: bool = True,
    plugins: Iterable[Any] = (),
    env: Mapping[str, str] | None = None,
    warn: bool = True,
) -> Registries:
    """Build fresh registries from every plugin source.

    ``plugins`` holds plugin objects (modules, classes or instances with hookimpls) or
    ``(name, object)`` pairs, registered after the discovered ones. With ``entry_points=False`` only
    the core built-ins, ``FEWSTEP_PLUGINS`` and ``plugins`` are used.
    """
    env = os.environ if env is None else env
    loader = _Loader()
    if entry_points:
        for ep in _entry_points():
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                ep.name, ep.value, "entry point",
                dist=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            loader.add(info, ep.load)
    if not any(i.module == CORE_MODULE for i in loader.infos):
        # running from a source tree that is not installed: the core still registers itself
        loader.add(PluginInfo("core", CORE_MODULE, "direct"), lambda: resolve(CORE_MODULE))
    for ref in filter(None, (r.strip() for r in env.get("FEWSTEP_PLUGINS", "").split(","))):
        loader.add(PluginInfo(ref, ref, "FEWSTEP_PLUGINS"), functools.partial(resolve, ref))
    for item in plugins:
        name, obj = item if isinstance(item, tuple) else (_plugin_name(item), item)
        loader.add(PluginInfo(name, _plugin_module(obj), "direct"), lambda obj=obj: obj)

    regs = Registries()
    loader.fill(regs)
    regs.plugins = loader.infos
    failed = {i.name: i.error or "" for i in loader.infos if i.status != "ok"}
    for reg in regs:
        reg.failed_plugins = dict(failed)
    if failed:
        strict = env.get("FEWSTEP_STRICT_PLUGINS", "") not in ("", "0", "false", "no")
        if strict:
            name, err = next(iter(failed.items()))
            raise PluginError(f"plugin '{name}' failed to load: {err} (FEWSTEP_STRICT_PLUGINS is set)")
        if warn:
            for name, err in failed.items():
                if name not in _warned:
                    _warned.add(name)
                    print(f"fewstep: warning: plugin '{name}' failed to load: {err} "
                          "(see `fewstep plugins`)", file=sys.stderr)
    return regs


def _plugin_name(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _plugin_module(obj: Any) -> str:
    return getattr(obj, "__module__", None) or getattr(obj, "__name__", "?")


@functools.lru_cache(maxsize=1)
def get_registries() -> Registries:
    """The process-wide registries, built on first use (never at import time)."""
    return load_registries()


def build_ref(spec: Any, kind: str, *args: Any, registries: Registries | None = None) -> Any:
    """:func:`fewstep.registry.build_ref`, looking names up in ``registries`` or, by default, the
    installed plugins' (:func:`get_registries`): what an objective calls to build the kernel its
    Config names, e.g. ``build_ref(cfg.kernel, "kernels")``."""
    return _build_ref(spec, kind, *args, registries=registries if registries is not None else get_registries())
