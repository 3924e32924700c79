"""Typed registries: one per component kind, filled by plugins through pluggy hooks.

An entry is a name, a factory, the component's pydantic Config model, a one-line description and
the plugin that registered it. Factories may be given as ``"module:attr"`` strings so that
registering a component never imports torch: the module is imported when the component is built.
"""
from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterator, Literal

from pydantic import BaseModel, BeforeValidator, Field, create_model

from fewstep.errors import ConfigError, PluginError, UnknownComponentError
from fewstep.validation import StrictModel

KINDS = ("interpolants", "networks", "kernels", "objectives", "samplers", "datasets", "metrics", "loggers")
# Recipe section -> registry kind, for messages ("objective 'x'" rather than "objectives 'x'").
SINGULAR = {
    "interpolants": "interpolant",
    "networks": "network",
    "kernels": "kernel",
    "objectives": "objective",
    "samplers": "sampler",
    "datasets": "dataset",
    "metrics": "metric",
    "loggers": "logger",
}


class ComponentConfig(StrictModel):
    """Base of every component's Config: unknown fields are errors, values are validated on assignment,
    booleans are not numbers and floats are finite (:class:`fewstep.validation.StrictModel`)."""


def missing_package(module: str, extra: str, who: str, loc: tuple) -> list[tuple[tuple, str]]:
    """``resources()`` of a component that needs an optional package (:class:`fewstep.protocols.NamesResources`):
    nothing when ``module`` is importable, else one note at ``loc`` naming the pip extra that installs it."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return []
    return [(loc, f"{who} needs the {module} package: pip install 'fewstep[{extra}]'")]


def require_resources(cfg) -> None:
    """Raise the first of ``cfg.resources()`` as a one-line ConfigError: for a component about to use them,
    where ``fewstep check`` only noted them."""
    for loc, problem in cfg.resources():
        raise ConfigError(f"{'.'.join(map(str, loc))}: {problem}")


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

    def model(self) -> type[BaseModel]:
        """The entry's Config with a ``name: Literal[name]`` field: what a recipe section validates
        against. Instances remember their entry, so :func:`build_ref` can build them."""
        return _tagged(self)


@functools.lru_cache(maxsize=None)
def _tagged(entry: Entry) -> type[BaseModel]:
    model = create_model(
        f"{SINGULAR[entry.kind].title()}_{entry.name}",
        __base__=entry.config,
        name=(Literal[entry.name], Field(description=entry.description)),
    )
    model.__doc__ = entry.config.__doc__ or entry.description
    model.__fewstep_entry__ = entry
    return model


# --- references from one component's Config to another registered component ----------------------
@dataclass(frozen=True)
class RefKind:
    """Field metadata: the value names a component of registry ``kind``."""

    kind: str


def _as_spec(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("give a registered name, or a mapping with 'name' and that component's options")
    return value


def component_ref(kind: str, default: str, description: str) -> Any:
    """A Config field that names another registered component, e.g. an objective's kernel.

    In a recipe it is written ``kernel: laplace`` or ``kernel: {name: laplace, eps: 1e-8}``. The
    recipe validator checks the name against the registry and the options against that
    component's Config, then stores the validated Config, which :func:`build_ref` builds.
    Use as ``kernel: KernelRef = component_ref("kernels", "laplace", "...")``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r} (known: {', '.join(KINDS)})")
    return Field(default_factory=lambda: {"name": default},
                 description=f"{description} (a registered {SINGULAR[kind]}: name or {{name: ..., options}})")


def Ref(kind: str) -> Any:
    """The type of a :func:`component_ref` field: ``Ref("kernels")``."""
    return Annotated[Any, BeforeValidator(_as_spec), RefKind(kind)]


def ref_fields(config: BaseModel) -> list[tuple[str, str]]:
    """(field name, registry kind) of every component reference in a Config instance."""
    out = []
    for name, info in type(config).model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, RefKind):
                out.append((name, meta.kind))
    return out


def build_ref(spec: Any, kind: str, *args: Any, registries: "Registries | None" = None) -> Any:
    """Build the component a :func:`component_ref` field names.

    A Config validated by a recipe knows its entry; a plain name or mapping (a Config built in
    Python) is looked up in ``registries``. :func:`fewstep.plugins.build_ref` is this function with
    the installed plugins' registries as the default.
    """
    entry = getattr(type(spec), "__fewstep_entry__", None)
    if entry is None:
        spec = _as_spec(spec)
        if registries is None:
            raise PluginError(f"{SINGULAR[kind]} {spec['name']!r} is given by name outside a recipe: pass registries= "
                              "(or use fewstep.plugins.build_ref, which looks in the installed plugins)")
        entry = registries.kind(kind).get(spec["name"])
        spec = entry.model().model_validate(spec)
    elif entry.kind != kind:
        raise PluginError(f"expected a {SINGULAR[kind]}, got {SINGULAR[entry.kind]} '{entry.name}'")
    return entry.build(spec, *args)


@dataclass
class Registry:
    """Name -> :class:`Entry` for one kind of component."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    # names that a plugin which failed to load would have provided are unknown, but we can say why
    failed_plugins: dict[str, str] = field(default_factory=dict)

    def _validate(self, entry: Entry) -> None:
        """An entry's own problems (bad name, config not a pydantic model, a 'name' field): raised in
        the plugin's hook, they fail that plugin only."""
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

    def _add(self, entry: Entry) -> None:
        self._validate(entry)
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
        entry = Entry(self._registry.kind, name, factory, config, str(description).strip(), self._plugin)
        self._registry._validate(entry)  # raised inside the hook: this plugin fails, the others load
        self.pending.append(entry)

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
    loggers: Registry = field(default_factory=lambda: Registry("loggers"))
    plugins: list[Any] = field(default_factory=list)  # fewstep.plugins.PluginInfo

    def kind(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise KeyError(kind)
        return getattr(self, kind)

    def __iter__(self) -> Iterator[Registry]:
        return iter(getattr(self, k) for k in KINDS)
