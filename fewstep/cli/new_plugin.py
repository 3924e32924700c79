"""``fewstep new-plugin NAME``: scaffold an installable plugin package (a kernel, its tests, a pyproject)."""
from __future__ import annotations

from typing import Annotated

import typer

from fewstep.cli.common import clean_errors, err


@clean_errors
def new_plugin(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Package name, e.g. fewstep-my-kernels.")],
    directory: Annotated[str, typer.Option("--dir", metavar="DIR", help="Where to create the package folder.")] = ".",
) -> None:
    """Create NAME/ with a pyproject (fewstep entry point), a Cauchy kernel, and tests that run
    fewstep's conformance kit. Then: pip install -e NAME && fewstep plugins && pytest NAME.

    \b
    Example:
      fewstep new-plugin fewstep-my-kernels
    """
    from fewstep.scaffold import names, scaffold

    root = scaffold(name, directory)
    _, module = names(name)
    err(f"created {root}/ (pyproject.toml, {module}/__init__.py, {module}/kernels.py, tests/, README.md)")
    err(f"next: pip install -e {root} && fewstep plugins && pytest {root}")
    print(root)
