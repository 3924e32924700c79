"""Writing files so that a crash never leaves a half-written one: write beside the target, then rename.

Every file fewstep writes for later reading (checkpoints, the resolved recipe, metrics, eval and bench
results, caches, plots) goes through these helpers. ``os.replace`` is atomic on one file system, so a
reader sees either the old file or the new one, never a mixture.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_dir", "atomic_path", "write_json", "write_text"]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _open_modes(root: Path) -> None:
    """Give ``root`` and what it holds the modes a plain ``open`` would (0666 / 0777 less the umask):
    mkstemp, mkdtemp and safetensors create 0600 / 0700, which hides results from the other users of a
    shared run folder."""
    mask = _umask()
    os.chmod(root, (0o777 if root.is_dir() else 0o666) & ~mask)
    for sub in root.rglob("*") if root.is_dir() else ():
        if not sub.is_symlink():
            os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an error, removed when it raises. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _open_modes(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; it takes ``path``'s place when the block ends without
    an error (an existing ``path`` is moved aside first, then deleted), and is deleted when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _open_modes(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=1))
