"""fewstep: train and compare few-step generative models (IMM, consistency training, flow matching).

This module stays light (no torch import) so that the CLI answers ``--help`` and ``check`` fast.
Plugin authors need only ``fewstep.hookimpl`` and ``fewstep.ComponentConfig``.
"""
from __future__ import annotations

from fewstep.hookspecs import hookimpl
from fewstep.registry import ComponentConfig

__version__ = "0.1.0"
__all__ = ["ComponentConfig", "hookimpl", "__version__"]
