"""``fewstep bench``: objectives head to head at equal budget (spec, runner, report).

>>> from fewstep.bench import load_bench, run_bench
>>> bench = load_bench("recipes/bench_toy.yaml")
"""
from fewstep.bench.spec import Bench, Job, load_bench

__all__ = ["Bench", "Job", "load_bench", "run_bench"]


def run_bench(*args, **kwargs):
    """See :func:`fewstep.bench.runner.run_bench` (imported on use: it pulls in torch)."""
    from fewstep.bench.runner import run_bench as _run

    return _run(*args, **kwargs)
