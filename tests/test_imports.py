"""fewstep's imports run one way (DESIGN.md): maths and data -> run -> train, eval -> api -> bench -> cli.

The graph is read from the source (every import statement, at module level or inside a function, but
not those under ``if TYPE_CHECKING:``, which never run), so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fewstep

ROOT = Path(fewstep.__file__).parent

# Layers that must not reach above themselves (module prefixes).
MATHS_AND_DATA = ("fewstep.interpolants", "fewstep.flowmap", "fewstep.kernels", "fewstep.samplers",
                  "fewstep.objectives", "fewstep.networks", "fewstep.data", "fewstep.protocols",
                  "fewstep.registry", "fewstep.config", "fewstep.files", "fewstep.errors")
ABOVE = {
    MATHS_AND_DATA: ("fewstep.run", "fewstep.train", "fewstep.eval", "fewstep.api", "fewstep.bench", "fewstep.cli"),
    ("fewstep.run",): ("fewstep.train", "fewstep.eval", "fewstep.api", "fewstep.bench", "fewstep.cli"),
    ("fewstep.train",): ("fewstep.eval", "fewstep.api", "fewstep.bench", "fewstep.cli"),
    ("fewstep.eval",): ("fewstep.train", "fewstep.api", "fewstep.bench", "fewstep.cli"),
    ("fewstep.api",): ("fewstep.bench", "fewstep.cli"),
    ("fewstep.bench",): ("fewstep.cli",),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name an import statement of this module names (``from a import b`` gives a and a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the fewstep modules it imports, with the packages above each (whose __init__ runs
    first), except the importer's own packages (a package's __init__ may re-export its submodules)
    and the root package (the public facade, which imports lazily)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if not target:
                continue
            deps.add(target)
            parent = target.rpartition(".")[0]
            while parent.count("."):  # fewstep.a.b -> fewstep.a (not fewstep)
                if not name.startswith(parent + "."):
                    deps.add(parent)
                parent = parent.rpartition(".")[0]
        deps.discard(name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = _graph()
    assert "fewstep.eval.grids" in graph["fewstep.api"]  # imported inside a function
    assert "fewstep.run.checkpoint" in graph["fewstep.run.rundir"]
    assert "fewstep.config" in graph["fewstep.run.rundir"]  # from fewstep.config import ...
    assert "fewstep.flowmap" not in graph["fewstep.objectives"]  # only under TYPE_CHECKING


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_fewstep():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer", list(ABOVE), ids=lambda layer: layer[0] if len(layer) == 1 else "maths and data")
def test_no_layer_imports_a_layer_above_it(layer):
    bad = [f"{mod} imports {dep}" for mod, deps in _graph().items() if mod.startswith(layer)
           for dep in deps if dep.startswith(ABOVE[layer])]
    assert not bad, "; ".join(sorted(bad))


def test_the_core_never_imports_an_objective_plugin():
    plugins = ("fewstep_imm", "fewstep_ct", "fewstep_fm", "fewstep_example")
    bad = [f"{name} imports {target}" for name, path in _modules().items()
           for target in _imported_names(name, path) if target.split(".")[0] in plugins]
    assert not bad, "; ".join(bad)


def _fewstep_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every absolute ``fewstep...`` import in a file (name None for ``import a.b``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "fewstep"]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "fewstep":
            out += [(node.module, a.name) for a in node.names]
    return out


def test_every_fewstep_import_in_the_repository_resolves():
    """Scripts no test runs (bench/) and plugins import fewstep by path: a moved module breaks them silently."""
    import importlib
    import warnings

    repo = ROOT.parent
    folders = ("fewstep", "bench", "plugins", "examples", "tests")
    files = [p for folder in folders for p in (repo / folder).rglob("*.py")]
    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated paths still resolve
        for path in files:
            for module, name in _fewstep_imports(path):
                try:
                    mod = importlib.import_module(module)
                except ImportError as exc:
                    bad.append(f"{path.relative_to(repo)}: {module} ({exc})")
                    continue
                if name is not None and not hasattr(mod, name):
                    try:
                        importlib.import_module(f"{module}.{name}")
                    except ImportError:
                        bad.append(f"{path.relative_to(repo)}: {module} has no {name}")
    assert not bad, "; ".join(bad)
