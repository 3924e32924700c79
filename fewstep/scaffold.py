"""``fewstep new-plugin NAME``: a ready-to-install plugin package with one kernel and its tests.

The package registers a Cauchy kernel k(a, b) = 1 / (1 + w^2 ||a - b||^2 / D) through the
``fewstep`` entry-point group, tests it against its closed form and runs the conformance kit over
everything it registers. Rename, replace or add components from there (docs/plugins.md).
"""
from __future__ import annotations

import re
from pathlib import Path

from fewstep.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A fewstep plugin: the Cauchy kernel."
requires-python = ">=3.10"
dependencies = ["fewstep"]

[project.optional-dependencies]
dev = ["pytest>=8"]

# fewstep finds plugins through this entry-point group: name = module with @fewstep.hookimpl functions.
[project.entry-points.fewstep]
{module} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''\
"""{dist}: registers the ``cauchy`` kernel with fewstep (found through the ``fewstep`` entry points).

Registering imports no torch: the factory is a "module:attr" string, imported when a recipe uses it.
"""
from pydantic import Field

import fewstep


class CauchyConfig(fewstep.ComponentConfig):  # unknown fields in a recipe are errors
    scale: float = Field(1.0, gt=0, description="Multiplies the bandwidth w: k = 1 / (1 + (scale w)^2 d^2 / D).")


@fewstep.hookimpl
def fewstep_register_kernels(registry):
    registry.add("cauchy", "{module}.kernels:build_cauchy", CauchyConfig,
                 "1 / (1 + w^2 ||a-b||^2 / D): heavy-tailed, smooth at 0")
'''

KERNELS = '''\
"""The Cauchy kernel over groups of particles (the kernel contract of fewstep.hookspecs)."""
from __future__ import annotations

import torch

from fewstep.kernels import Kernel, pairwise_sq_dist


class Cauchy(Kernel):
    """k(a, b) = 1 / (1 + (s w)^2 ||a - b||^2 / D) for a, b [G, M, D] and bandwidth w [G].

    A rational-quadratic kernel with exponent 1 (Rasmussen & Williams 2006, Eq. 4.19): characteristic,
    so MMD with it is a distance between distributions; its tails are heavier than the RBF's.
    """

    name = "cauchy"

    def __init__(self, scale: float = 1.0):
        self.scale = float(scale)

    def __call__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d2 = pairwise_sq_dist(a, b)
        return 1.0 / (1.0 + (self.scale * w.reshape(-1, 1, 1)) ** 2 * d2 / a.shape[-1])


def build_cauchy(cfg) -> Cauchy:
    return Cauchy(cfg.scale)
'''

TEST = '''\
"""The kernel against its closed form, and the conformance kit over everything this plugin registers."""
import pytest
import torch

from fewstep.testing import check_component, conformance_cases
from {module}.kernels import Cauchy


def test_cauchy_closed_form():
    a = torch.zeros(1, 1, 4, dtype=torch.float64)
    b = torch.full((1, 1, 4), 0.5, dtype=torch.float64)  # ||a - b||^2 = 1, D = 4
    w = torch.tensor([2.0], dtype=torch.float64)
    assert Cauchy(1.0)(a, b, w).item() == pytest.approx(1 / (1 + 4 * 1 / 4))
    assert Cauchy(1.0)(a, a, w).item() == 1.0


@pytest.mark.parametrize("entry", conformance_cases(plugin="{module}"))
def test_conformance(entry):
    check_component(entry)


def test_the_plugin_registers_something():
    assert conformance_cases(plugin="{module}"), "is the package installed (pip install -e .)?"
'''

README = '''\
# {dist}

A [fewstep](https://github.com/) plugin that registers the `cauchy` kernel.

```bash
pip install -e ".[dev]"          # into the environment that has fewstep
fewstep plugins                  # lists {module} 0.1.0 and its kernel
pytest                           # closed form + fewstep's conformance kit
```

Use it from a recipe, e.g. as IMM's kernel: `objective: {{name: imm, kernel: cauchy}}`
or `kernel: {{name: cauchy, scale: 0.5}}`. See fewstep's docs/plugins.md for the other hooks.
'''


def names(name: str) -> tuple[str, str]:
    """(distribution name, module name) for NAME: ``my-kernels`` -> (``my-kernels``, ``my_kernels``)."""
    if not _NAME.match(name):
        raise ConfigError(f"new-plugin: {name!r} is not a package name (letters, digits, - and _, starting "
                          "with a letter)")
    return name.replace("_", "-").lower(), name.replace("-", "_").lower()


def scaffold(name: str, parent: str | Path = ".") -> Path:
    """Write the package into ``parent/<dist name>/``; refuses to overwrite anything."""
    dist, module = names(name)
    root = Path(parent) / dist
    if root.exists():
        raise ConfigError(f"new-plugin: {root} already exists; choose another name or folder (--dir)")
    files = {"pyproject.toml": PYPROJECT, f"{module}/__init__.py": INIT, f"{module}/kernels.py": KERNELS,
             f"tests/test_{module}.py": TEST, "README.md": README}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(dist=dist, module=module))
    return root
