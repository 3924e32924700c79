"""fewstep.scaffold: package names, refusals, and files that parse and register a working kernel."""
from __future__ import annotations

import ast
import importlib
import sys

import pytest
import torch

from fewstep.errors import ConfigError
from fewstep.scaffold import names, scaffold


@pytest.mark.parametrize(("name", "dist", "module"), [
    ("my-kernels", "my-kernels", "my_kernels"), ("my_kernels", "my-kernels", "my_kernels"),
    ("Fewstep-IMQ2", "fewstep-imq2", "fewstep_imq2"), ("p", "p", "p"),
])
def test_names_give_the_distribution_and_module(name, dist, module):
    assert names(name) == (dist, module)


@pytest.mark.parametrize("name", ["", "9lives", "-dash", "_under", "two words", "dot.ted", "ünï", "a/b"])
def test_names_refuse_what_is_not_a_package_name(name):
    with pytest.raises(ConfigError, match="is not a package name"):
        names(name)


def test_scaffold_refuses_a_bad_name_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError):
        scaffold("9 bad", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_scaffold_refuses_an_existing_folder_and_leaves_it_alone(tmp_path):
    (tmp_path / "my-kernels").mkdir()
    (tmp_path / "my-kernels" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="my-kernels already exists"):
        scaffold("my_kernels", tmp_path)  # the distribution name is what is checked
    assert [p.name for p in (tmp_path / "my-kernels").iterdir()] == ["mine.txt"]


@pytest.fixture
def package(tmp_path):
    return scaffold("fewstep-scaffold-probe", tmp_path)


def test_scaffold_writes_the_package_files(package, tmp_path):
    assert package == tmp_path / "fewstep-scaffold-probe"
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert files == ["README.md", "fewstep_scaffold_probe/__init__.py", "fewstep_scaffold_probe/kernels.py",
                     "pyproject.toml", "tests/test_fewstep_scaffold_probe.py"]


def test_pyproject_is_toml_with_the_entry_point(package):
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    data = tomllib.loads((package / "pyproject.toml").read_text())
    assert data["project"]["name"] == "fewstep-scaffold-probe"
    assert data["project"]["entry-points"]["fewstep"] == {"fewstep_scaffold_probe": "fewstep_scaffold_probe"}
    assert data["tool"]["setuptools"]["packages"] == ["fewstep_scaffold_probe"]
    assert "fewstep" in data["project"]["dependencies"]


def test_python_files_parse_and_readme_is_filled_in(package):
    for path in package.rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path))
        assert "{module}" not in path.read_text() and "{dist}" not in path.read_text()
    readme = (package / "README.md").read_text()
    assert readme.startswith("# fewstep-scaffold-probe") and "{name: cauchy, scale: 0.5}" in readme


def test_the_package_registers_a_cauchy_kernel_with_its_closed_form(package, monkeypatch):
    from fewstep.plugins import load_registries

    monkeypatch.syspath_prepend(str(package))
    try:
        module = importlib.import_module("fewstep_scaffold_probe")
        regs = load_registries(entry_points=False, plugins=[("probe", module)], env={}, warn=False)
        entry = regs.kernels.get("cauchy")
        assert entry.plugin == "probe" and isinstance(entry.factory, str)
        kernel = entry.build(entry.model().model_validate({"name": "cauchy", "scale": 0.5}))
        a = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)  # G = 1, M = 2, D = 2
        b = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]], dtype=torch.float64)
        w = torch.tensor([4.0], dtype=torch.float64)
        gram = kernel(a, b, w)
        # k = 1 / (1 + (scale w)^2 ||a - b||^2 / D) with (scale w)^2 = 4 and D = 2
        want = [[1 / (1 + 4 * 4 / 2), 1 / (1 + 4 * 2 / 2)], [1 / (1 + 4 * 2 / 2), 1.0]]
        torch.testing.assert_close(gram[0], torch.tensor(want, dtype=torch.float64))
    finally:
        for name in [m for m in sys.modules if m.startswith("fewstep_scaffold_probe")]:
            sys.modules.pop(name, None)
