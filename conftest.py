"""Shared fixtures for tests/ and plugins/*/tests: one torch thread (2 on a loaded 2-core machine can be
5-70x slower), no hub access."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


def pytest_configure(config):
    import tempfile

    # fewstep's caches (the digits classifier, reference statistics) go to a fresh folder per session,
    # so tests neither read nor fill the user's ~/.cache/fewstep.
    os.environ["FEWSTEP_CACHE"] = tempfile.mkdtemp(prefix="fewstep-cache-")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def regs():
    """Fresh registries from the installed plugins (no FEWSTEP_PLUGINS from the environment)."""
    from fewstep.plugins import load_registries

    return load_registries(env={}, warn=False)


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path of a file in the test's tmp dir."""
    def _write(name: str, text: str):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    return _write
