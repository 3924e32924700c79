"""fewstep: train and compare few-step generative models (IMM, MeanFlow, sCT, TVM, shortcut, CT, FM).

This module stays light (no torch import) so that the CLI answers ``--help`` and ``check`` fast.
Plugin authors need ``fewstep.hookimpl`` and ``fewstep.ComponentConfig``; a new sampler or interpolant
can reuse the built-ins' options through ``fewstep.SamplerConfig`` and ``fewstep.InterpolantConfig``.
Users in Python: ``fewstep.train_recipe``, ``fewstep.load_run`` (a :class:`fewstep.api.Run` that
samples and evaluates), ``fewstep.evaluate_run``, ``fewstep.sample_run`` and ``fewstep.load_recipe``.
"""
from __future__ import annotations

from fewstep.hookspecs import hookimpl
from fewstep.registry import ComponentConfig
from fewstep.version import __version__

__all__ = ["ComponentConfig", "InterpolantConfig", "Run", "SamplerConfig", "evaluate_run", "hookimpl", "load_recipe",
           "load_run", "sample_run", "train_recipe", "__version__"]

_API = ("Run", "evaluate_run", "load_run", "sample_run", "train_recipe")  # fewstep.api: what the commands do


def __getattr__(name: str):
    """Imported on first use, so that ``import fewstep`` stays light: the built-ins' shared Config models
    (no torch), ``load_recipe`` (no torch), and the Python API of :mod:`fewstep.api`."""
    if name in ("SamplerConfig", "InterpolantConfig"):
        from fewstep import builtin

        return getattr(builtin, name)
    if name == "load_recipe":
        from fewstep.config import load_recipe

        return load_recipe
    if name in _API:
        from fewstep import api

        return getattr(api, name)
    raise AttributeError(f"module 'fewstep' has no attribute {name!r}")
