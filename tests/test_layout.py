"""Tests mirror the package: every module with logic has a test module of the same name.

fewstep/a/b.py -> tests/a/test_b.py; a package's __init__.py -> tests/<package path>/test_<package>.py;
plugins/<plugin>/m.py -> plugins/<plugin>/tests/test_m.py (its __init__.py -> test_<plugin>.py). A module
has logic when it defines a function or method (a module ``__getattr__`` for deprecated names aside).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def has_logic(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name != "__getattr__"
               for n in ast.walk(tree))


def expected_test(path: Path) -> Path:
    rel = path.relative_to(REPO)
    if rel.parts[0] == "plugins":
        plugin = rel.parts[1]
        name = plugin if path.name == "__init__.py" else path.stem
        return REPO / "plugins" / plugin / "tests" / f"test_{name}.py"
    folder = rel.parent.relative_to("fewstep")
    name = rel.parent.name if path.name == "__init__.py" else path.stem
    return REPO / "tests" / folder / f"test_{name}.py"


def modules() -> list[Path]:
    found = sorted((REPO / "fewstep").rglob("*.py"))
    found += sorted(p for p in (REPO / "plugins").rglob("*.py") if "tests" not in p.relative_to(REPO).parts)
    return [p for p in found if has_logic(p)]


def test_the_rule_maps_modules_to_test_modules():
    assert expected_test(REPO / "fewstep" / "run" / "rundir.py") == REPO / "tests" / "run" / "test_rundir.py"
    assert expected_test(REPO / "fewstep" / "api.py") == REPO / "tests" / "test_api.py"
    assert expected_test(REPO / "fewstep" / "config" / "__init__.py") == REPO / "tests" / "config" / "test_config.py"
    imm = REPO / "plugins" / "fewstep_imm"
    assert expected_test(imm / "__init__.py") == imm / "tests" / "test_fewstep_imm.py"
    assert expected_test(imm / "weighting.py") == imm / "tests" / "test_weighting.py"
    assert has_logic(REPO / "fewstep" / "run" / "rundir.py") and not has_logic(REPO / "fewstep" / "version.py")


@pytest.mark.parametrize("module", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_with_logic_has_its_test_module(module):
    test = expected_test(module)
    assert test.is_file(), f"{module.relative_to(REPO)} has no {test.relative_to(REPO)}"
    assert "def test_" in test.read_text(encoding="utf-8"), f"{test.relative_to(REPO)} holds no test"


def test_every_package_is_in_the_distribution():
    """pyproject lists its packages by hand: one left out installs from a checkout (editable) and is
    missing from a wheel (fewstep.run was, for a while)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(data["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fewstep").rglob("__init__.py")}
    assert found - listed == set()
    plugin_dirs = data["tool"]["setuptools"]["package-dir"]
    assert {name for name in listed if not name.startswith("fewstep.") and name != "fewstep"} == set(plugin_dirs)
    assert all((REPO / folder / "__init__.py").is_file() for folder in plugin_dirs.values())
    assert set(data["project"]["entry-points"]["fewstep"].values()) == {"fewstep.builtin", *plugin_dirs}
