"""Reading EDM-style "persistence" pickles (the released IMM checkpoints, EDM2-style statistics) without
running their code.

EDM's ``torch_utils.persistence`` pickles a network with the *source code* of its module, and loading
one the usual way (``pickle.load``) executes that source and anything else the pickle names. This
module never does: a restricted ``pickle.Unpickler`` resolves only

- the data reconstructors of torch and numpy (tensors, parameters, storages read with
  ``torch.load(weights_only=True)``, dtypes, numpy scalars and arrays), ``collections.OrderedDict`` and a few
  builtin containers;
- ``torch_utils.persistence._reconstruct_persistent_obj``, replaced by :class:`Persistent`, which keeps
  the class name and the object's state and never looks at the embedded source;
- the classes of ``torch.nn`` and ``timm`` modules (and ``dnnlib``'s EasyDict), replaced by
  :class:`Stub` records of their state: no module of theirs is constructed.

Anything else a pickle names (``os.system``, ``builtins.eval``, ...) ends the load with a
:class:`~fewstep.errors.CheckpointError` naming the file and the global. :func:`state_dict` then
walks the records and collects the parameters and persistent buffers under their dotted names.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from fewstep.errors import CheckpointError

__all__ = ["Persistent", "Stub", "load_persistence_pickle", "state_dict"]


class Stub:
    """What a pickled object of an allowed module class (torch.nn, timm) becomes: its class path, the
    arguments it was called with, and its state; nothing of the class runs."""

    path = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs, self.state = args, kwargs, {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"Stub({self.path})"


class Persistent:
    """What an EDM persistent object becomes: ``class_name``, the ``state`` (its ``__dict__``) and the
    length of the source code the pickle carries (never executed)."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or "class_name" not in meta:
            raise pickle.UnpicklingError("a persistent object without its class name")
        self.class_name = str(meta["class_name"])
        self.state = dict(meta.get("state") or {})
        self.source_chars = len(meta.get("module_src") or "")

    def __repr__(self) -> str:
        return f"Persistent({self.class_name})"


def _parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data.detach()


def _storage(data: bytes):
    """A storage pickled as the bytes of a legacy ``torch.save``, read with the weights-only loader."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy(name: str) -> Any:
    """numpy's dtype and array constructors and its scalar and array reconstructors (data only: an array's
    state is its shape, dtype and bytes, or for an object array a list read by this same unpickler)."""
    import numpy as np

    if name in ("dtype", "ndarray"):
        return getattr(np, name)
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("torch", "device"): torch.device,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Persistent,
    ("dnnlib.util", "EasyDict"): dict,
}
_NUMPY = {("numpy", "dtype"), ("numpy", "ndarray")} | {
    (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("scalar", "_reconstruct")}
_MODULE_PACKAGES = ("torch.nn.modules.", "timm.")


class _Restricted(pickle.Unpickler):
    def __init__(self, fh, path: str):
        super().__init__(fh)
        self.path = path
        self.stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _NUMPY:
            return _numpy(name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_MODULE_PACKAGES) and name[:1].isupper():
            if key not in self.stubs:
                self.stubs[key] = type(name, (Stub,), {"path": f"{module}.{name}"})
            return self.stubs[key]
        raise CheckpointError(f"{self.path}: refused to load: the pickle names {module}.{name}, which a "
                              "checkpoint has no need of (only tensors, containers and module records are read)")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.path}: refused to load: a persistent id in the pickle (not an EDM checkpoint)")


def load_persistence_pickle(path: str | Path) -> Any:
    """The object a pickle holds, read by the restricted unpickler (see the module docstring)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return _Restricted(fh, str(path)).load()
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line, never a traceback
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise CheckpointError(f"{path}: not a readable checkpoint pickle ({type(exc).__name__}: {detail})") from None


def state_dict(obj: Persistent | Stub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a recorded module tree, under their dotted names (what
    ``module.state_dict()`` of the original would give)."""
    state = obj.state
    out: dict[str, torch.Tensor] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, (Persistent, Stub)):
            out.update(state_dict(child, f"{prefix}{name}."))
    return out
