"""Typed registries: one per component kind, filled by plugins through pluggy hooks.

An entry is a name, a factory, the component's pydantic Config model, a one-line description and
the plugin that registered it. Factories may be given as ``"module:attr"`` strings so that
registering a component never imports torch: the module is imported when the component is built.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict

from fewstep.errors import PluginError, UnknownComponentError

KINDS = ("interpolants", "networks", "kernels", "objectives", "samplers", "datasets", "metrics")
# Recipe section -> registry kind, for messages ("objective 'x'" rather than "objectives 'x'").
SINGULAR = {
    "interpolants": "interpolant",
    "networks": "network",
    "kernels": "kernel",
    "objectives": "objective",
    "samplers": "sampler",
    "datasets": "dataset",
    "metrics": "metric",
}


class ComponentConfig(BaseModel):
    """Base of every component's Config: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def resolve(ref: Callable | str) -> Any:
    """The object behind ``"module:attr"`` (or ``"module"``), imported on first use; callables pass through."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable | str
    config: type[ComponentConfig]
    description: str
    plugin: str

    def build(self, cfg: BaseModel, *args: Any, **kwargs: Any) -> Any:
        """Instantiate the component from its validated config (and kind-specific arguments)."""
        return resolve(self.factory)(cfg, *args, **kwargs)


@dataclass
class Registry:
    """Name -> :class:`Entry` for one kind of component."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    # names that a plugin which failed to load would have provided are unknown, but we can say why
    failed_plugins: dict[str, str] = field(default_factory=dict)

    def _add(self, entry: Entry) -> None:
        if not entry.name or not entry.name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(
                f"plugin '{entry.plugin}' registered {SINGULAR[self.kind]} name {entry.name!r}: "
                "names use letters, digits, '_' and '-'"
            )
        if not (isinstance(entry.config, type) and issubclass(entry.config, BaseModel)):
            raise PluginError(
                f"plugin '{entry.plugin}' registered {SINGULAR[self.kind]} '{entry.name}' "
                "whose config is not a pydantic model"
            )
        if "name" in entry.config.model_fields:
            raise PluginError(
                f"plugin '{entry.plugin}': the config of {SINGULAR[self.kind]} '{entry.name}' "
                "must not declare a field called 'name' (the registry adds it)"
            )
        old = self.entries.get(entry.name)
        if old is not None:
            raise PluginError(
                f"{SINGULAR[self.kind]} '{entry.name}' is registered by two plugins: "
                f"'{old.plugin}' and '{entry.plugin}'"
            )
        self.entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        """Look a component up; an unknown name lists the known ones and the closest match."""
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self.entries)
        msg = f"unknown {SINGULAR[self.kind]} {name!r}"
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        msg += f" (known: {', '.join(known) or 'none'})"
        if self.failed_plugins:
            broken = ", ".join(f"'{p}'" for p in sorted(self.failed_plugins))
            msg += f"; plugins that failed to load: {broken} (see `fewstep plugins`)"
        return msg

    def build(self, cfg: BaseModel, *args: Any, **kwargs: Any) -> Any:
        """Build from a config that carries its registry ``name``."""
        return self.get(cfg.name).build(cfg, *args, **kwargs)  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries[n] for n in sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)


class Registrar:
    """What a ``fewstep_register_<kind>`` hook receives: ``add()`` stamps entries with the plugin.

    Entries are collected and committed only when the hook returns, so a hook that raises half-way
    leaves nothing behind.
    """

    def __init__(self, registry: Registry, plugin: str):
        self._registry = registry
        self._plugin = plugin
        self.pending: list[Entry] = []

    @property
    def kind(self) -> str:
        return self._registry.kind

    def add(
        self,
        name: str,
        factory: Callable | str,
        config: type[ComponentConfig],
        description: str,
    ) -> None:
        """Register component ``name``: ``factory(config_instance, ...)`` builds it.

        ``factory`` is a callable or a ``"module:attr"`` string (imported when first built);
        ``config`` is a pydantic model (subclass :class:`ComponentConfig`) without a ``name`` field;
        ``description`` is one line shown by ``fewstep plugins``.
        """
        self.pending.append(
            Entry(self._registry.kind, name, factory, config, description.strip(), self._plugin)
        )

    def commit(self) -> list[Entry]:
        for entry in self.pending:
            self._registry._add(entry)
        return self.pending


@dataclass
class Registries:
    """All registries plus what is known about the plugins that filled them."""

    interpolants: Registry = field(default_factory=lambda: Registry("interpolants"))
    networks: Registry = field(default_factory=lambda: Registry("networks"))
    kernels: Registry = field(default_factory=lambda: Registry("kernels"))
    objectives: Registry = field(default_factory=lambda: Registry("objectives"))
    samplers: Registry = field(default_factory=lambda: Registry("samplers"))
    datasets: Registry = field(default_factory=lambda: Registry("datasets"))
    metrics: Registry = field(default_factory=lambda: Registry("metrics"))
    plugins: list[Any] = field(default_factory=list)  # fewstep.plugins.PluginInfo

    def kind(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise KeyError(kind)
        return getattr(self, kind)

    def __iter__(self) -> Iterator[Registry]:
        return iter(getattr(self, k) for k in KINDS)
