"""fewstep: train and compare few-step generative models (IMM, consistency training, flow matching).

This module stays light (no torch import) so that the CLI answers ``--help`` and ``check`` fast.
Plugin authors need ``fewstep.hookimpl`` and ``fewstep.ComponentConfig``; a new sampler or interpolant
can reuse the built-ins' options through ``fewstep.SamplerConfig`` and ``fewstep.InterpolantConfig``.
"""
from __future__ import annotations

from fewstep.hookspecs import hookimpl
from fewstep.registry import ComponentConfig
from fewstep.version import __version__

__all__ = ["ComponentConfig", "InterpolantConfig", "SamplerConfig", "hookimpl", "__version__"]


def __getattr__(name: str):
    """The built-ins' shared Config models, imported on first use (still no torch)."""
    if name in ("SamplerConfig", "InterpolantConfig"):
        from fewstep import builtin

        return getattr(builtin, name)
    raise AttributeError(f"module 'fewstep' has no attribute {name!r}")
