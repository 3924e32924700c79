"""YAML with source positions, YAML 1.2 floats, and ``--set a.b=c`` overrides.

PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string; recipes are written by people who
expect a float, so the loader also resolves YAML 1.2 floats. Positions come from the composed node
tree, so every validation error can name ``file:line:col``. What a YAML parser lets through and a
recipe must not: a file that is not UTF-8 text (or holds NUL bytes) is refused in one line, and a
mapping that repeats a key is an error naming both lines (PyYAML silently keeps the later one).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fewstep.errors import RecipeError

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
        |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping repeats a key."""


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2 core schema) and refuses repeated keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with << may be overridden by explicit ones
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        None, None,
                        f"duplicated key {key!r} (first at line {first.line + 1}; the later one would silently win)",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


RecipeLoader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _ch in "-+0123456789.":
    RecipeLoader.yaml_implicit_resolvers.setdefault(_ch, []).insert(
        0, ("tag:yaml.org,2002:float", _FLOAT_12)
    )


def parse_scalar(text: str, label: str | None = None) -> Any:
    """A ``--set`` value, read as YAML (``3e-4`` -> float, ``[1, 2]`` -> list, ``true`` -> bool); text that
    is not YAML stays a string. A NUL or other control character, or a mapping with a repeated key, is a
    RecipeError naming ``label`` (the flag)."""
    where = label or repr(text)
    bad = next((c for c in text if (ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127), None)
    if bad is not None:
        raise RecipeError([f"{where}: the value holds the control character {bad!r}"])
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise RecipeError([f"{where}: {exc.problem}"]) from None
    except yaml.YAMLError:
        return text


@dataclass
class Source:
    """A parsed recipe: its data, its node tree and the overrides applied on top."""

    path: str
    data: Any
    root: yaml.Node | None
    overrides: dict[tuple[str, ...], str] = field(default_factory=dict)

    def locate(self, loc: tuple) -> tuple[str, tuple]:
        """Map a validation ``loc`` to (``file:line:col`` or the ``--set`` that made it, cleaned loc).

        Segments that are not keys of the data (the discriminator tags pydantic inserts) are dropped.
        """
        clean: list = []
        value: Any = self.data
        node = self.root
        mark = None
        for i, seg in enumerate(loc):
            if isinstance(value, dict):
                if seg not in value:
                    if str(seg) in value:
                        seg = str(seg)
                    elif value.get("name") == seg:
                        continue  # the discriminator tag of this component
                    elif i == 0:  # a section the file leaves out (filled by defaults): name it, at the file
                        clean.append(seg)
                        value, node = None, None
                        continue
                    elif i == len(loc) - 1:
                        clean.append(seg)  # a missing key: reported at its parent
                        break
                    else:
                        continue  # a discriminator tag pydantic inserted
                value = value[seg]
                node, key = _child(node, seg)
                mark = key.start_mark if key is not None else mark
            elif isinstance(value, list) and isinstance(seg, int) and 0 <= seg < len(value):
                value = value[seg]
                node = node.value[seg] if isinstance(node, yaml.SequenceNode) and seg < len(node.value) else None
                mark = node.start_mark if node is not None else mark
            else:
                # below a leaf or an unknown key: keep naming it but stop walking
                clean.append(seg)
                value, node = None, None
                continue
            clean.append(seg)
        for path, flag in self.overrides.items():
            if tuple(clean[: len(path)]) == path:
                return f"{self.path} ({flag})", tuple(clean)
        if mark is None:
            return self.path, tuple(clean)
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}", tuple(clean)


def _child(node: yaml.Node | None, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                return v, k
    return None, None


def load_yaml(path: str | Path) -> Source:
    """Read a recipe file; syntax errors become one ``file:line:col`` line (RecipeError)."""
    path = str(path)
    text = read_text(path)
    loader = None
    try:
        loader = RecipeLoader(text)
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        raise RecipeError([f"{path}:{mark.line + 1}:{mark.column + 1} {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise RecipeError([f"{where} YAML syntax error: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (checked before parsing)
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError([f"{path}:{line} not a YAML text: the character {chr(exc.character)!r} "
                           "is not allowed"]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([f"{path} YAML error: {' '.join(str(exc).split())}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1:1 a recipe is a mapping of sections (data, network, objective, ...)"])
    return Source(path, data, root)


def read_text(path: str) -> str:
    """A recipe or bench file's text: UTF-8 (a byte-order mark is dropped), no NUL bytes; anything else is
    one RecipeError line naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        hint = next((f"; did you mean {path}{ext}?" for ext in (".yaml", ".yml") if Path(path + ext).is_file()), "")
        raise RecipeError([f"{path}: cannot read: {exc.strerror or exc}{hint}"]) from None
    if b"\0" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\0")) + 1
        raise RecipeError([f"{path}:{line} not a text file (a NUL byte); a recipe is YAML text"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError([f"{path}:{line} not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                           "save the file as UTF-8"]) from None


def apply_overrides(source: Source, overrides: list[str] | tuple[str, ...]) -> Source:
    """Apply ``a.b.c=value`` overrides (repeatable ``--set``) to the parsed data, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip(".").strip():
            raise RecipeError([f"--set {item}: expected dotted.path=value, e.g. train.lr=3e-4"])
        set_value(source, key, parse_scalar(raw, f"--set {item}"), f"--set {item}")
    return source


def set_value(source: Source, key: str, value: Any, label: str) -> Source:
    """Set ``a.b.c`` to an already-parsed value (a whole section when the path is one name); errors
    in it are reported at ``label`` (the ``--set`` flag, or the bench file field that set it)."""
    path = tuple(p for p in key.strip().split(".") if p)
    target = source.data
    for i, part in enumerate(path[:-1]):
        nxt = target.get(part) if isinstance(target, dict) else None
        if nxt is None:
            nxt = target[part] = {}
        elif isinstance(nxt, str):  # `kernel: laplace` is short for {name: laplace}: set a field inside it
            nxt = target[part] = {"name": nxt}
        if not isinstance(nxt, dict):
            raise RecipeError([f"{label}: {'.'.join(path[: i + 1])} is not a section"])
        target = nxt
    target[path[-1]] = copy.deepcopy(value)  # validation may rewrite it; never share it between recipes
    source.overrides[path] = label
    return source
