"""``fewstep plugins``: every plugin, its version, what it registered, and failures."""
from __future__ import annotations

import json
from typing import Annotated

import typer

from fewstep.cli.common import clean_errors


@clean_errors
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """List plugins and every registry entry with the plugin that registered it.

    \b
    Examples:
      fewstep plugins
      fewstep plugins --json
    """
    from fewstep.plugins import load_registries

    regs = load_registries(warn=False)
    if as_json:
        out = {
            "plugins": [p.as_dict() for p in regs.plugins],
            "components": {reg.kind: [{"name": e.name, "plugin": e.plugin, "description": e.description}
                                      for e in reg] for reg in regs},
        }
        print(json.dumps(out, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="plugins")
    for col in ("plugin", "source", "version", "status", "provides"):
        table.add_column(col)
    for p in regs.plugins:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in p.provides.items())
        status = "ok" if p.status == "ok" else f"[red]failed[/red]: {p.error}"
        table.add_row(p.name, f"{p.source} ({p.module})", f"{p.dist or ''} {p.version or ''}".strip(), status, provides)
    console.print(table)
    comp = Table(title="components")
    for col in ("kind", "name", "plugin", "description"):
        comp.add_column(col)
    for reg in regs:
        for e in reg:
            comp.add_row(reg.kind, e.name, e.plugin, e.description)
    console.print(comp)
