"""``fewstep bench BENCH.yaml``: train and evaluate every entry, then tables, CSV, markdown and a plot."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from fewstep.cli.common import DeviceOpt, clean_errors, err


@clean_errors
def bench(
    bench_file: Annotated[str, typer.Argument(metavar="BENCH", help="A bench file, e.g. recipes/bench_toy.yaml.")],
    out: Annotated[Optional[str], typer.Option(
        "--out", metavar="DIR", help="Output folder; default: runs/bench/<name>.")] = None,
    device: DeviceOpt = None,
    check_only: Annotated[bool, typer.Option(
        "--check", help="Validate the bench file and every recipe it expands to; train nothing.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a check of the bench file fails.")] = False,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Train missing runs in N processes (CPU: one per core).")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PATH=VALUE", help="Add to the bench's shared section, for every trained entry, e.g. "
                                            "--set train.steps=200 (a smoke test) (repeatable).")] = None,
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", metavar="ENTRY", help="Train and evaluate only this entry (repeatable).")] = None,
) -> None:
    """Train what has no finished run (resuming what was interrupted), evaluate every entry at every
    step count with the same seeds, and write results.json, .csv, .md and .png.

    \b
    Examples:
      fewstep bench recipes/bench_toy.yaml --jobs 2
      fewstep bench recipes/bench_toy.yaml --check      # validate every recipe it expands to
      fewstep bench recipes/bench_toy.yaml --set train.steps=200 --only imm --out /tmp/smoke
    """
    from rich.console import Console

    from fewstep.bench import load_bench
    from fewstep.plugins import get_registries

    regs = get_registries()
    spec = load_bench(bench_file, out, regs, overrides=set_ or [], only=only or [])
    if check_only:
        for job in spec.jobs:
            shares = f" (trained as {job.shares})" if job.shares else ""
            print(f"ok  {job.entry} on {job.data} seed {job.seed} -> {job.run_dir}{shares}")
        return
    from fewstep.bench.report import print_tables, run_checks, write_outputs
    from fewstep.bench.runner import run_bench

    results = run_bench(spec, regs, device=device, progress=not quiet, jobs=jobs, log=err)
    results["checks"] = run_checks(results, spec.checks)
    paths = write_outputs(results, spec.out)
    print_tables(results, Console(width=None if sys.stdout.isatty() else 160))
    err("wrote " + ", ".join(str(p) for p in paths))
    if strict and any(c["ok"] is False for c in results["checks"]):
        raise typer.Exit(1)
