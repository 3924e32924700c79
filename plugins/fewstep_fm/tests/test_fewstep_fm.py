"""The FM plugin's Config (fewstep_fm/__init__.py)."""
from __future__ import annotations

import pytest

from fewstep_fm import FMConfig


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        FMConfig(groupsize=4)
