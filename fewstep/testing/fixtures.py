"""Small data made on the spot, for tests and the conformance kit: nothing is downloaded.

- :func:`tiny_vae`: a randomly initialised diffusers ``AutoencoderKL`` (4 latent channels, factor 2),
  saved as a local folder that ``data.vae`` / ``fewstep encode --vae`` accept;
- :func:`image_folder`: a folder of PNGs in class subfolders (what the ``image_folder`` dataset reads);
- :func:`encoded_latents`: sklearn's bundled digits encoded by :func:`tiny_vae` (what ``latents`` reads);
- :func:`persistence_pickle`: a checkpoint in the format of the released IMM models (EDM's persistence
  pickles), written without EDM's code.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["encoded_latents", "image_folder", "persistence_pickle", "tiny_vae"]


def tiny_vae(folder: str | Path) -> Path:
    """A randomly initialised AutoencoderKL (3 -> 4 channels, spatial factor 2, ~20k parameters) saved in
    ``folder`` with ``save_pretrained``; returns the folder."""
    import torch
    from diffusers import AutoencoderKL

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16)
    vae.save_pretrained(folder)
    return folder


def image_folder(folder: str | Path, classes: int = 2, per_class: int = 4, size: tuple[int, int] = (14, 10)
                 ) -> Path:
    """``classes`` subfolders of ``per_class`` seeded RGB PNGs of ``size`` (w, h: not square, so the
    dataset's resize and centre crop do something); returns the folder."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.png")
    return folder


def encoded_latents(folder: str | Path, n: int = 32) -> Path:
    """The first ``n`` of sklearn's digits at 16 x 16, encoded by :func:`tiny_vae` (stored in
    ``folder/vae``) with their labels, in ``folder/latents``; returns that folder."""
    import torch

    from fewstep.data.images import digits_pixels
    from fewstep.data.latents import encode_images, load_vae, write_latents

    folder = Path(folder)
    vae_dir = tiny_vae(folder / "vae")
    pixels, labels = digits_pixels(16)
    images = (pixels[:n] * 255).round().to(torch.uint8)
    mean, std = encode_images(load_vae(str(vae_dir)), images)
    return write_latents(folder / "latents", mean, std, labels[:n], str(vae_dir), tuple(images.shape[1:]),
                         "digits (fewstep.testing.fixtures)")


def persistence_pickle(path: str | Path, state: dict, *, model_class: str, model_kwargs: dict, precond: dict,
                       module_src: str = "# (EDM would keep the network's source code here)") -> Path:
    """Write ``{"ema": IMMPrecond}`` in EDM's persistence format, as the released IMM checkpoints are, without
    EDM's code: the IMMPrecond and its network are persistent records (``torch_utils.persistence.
    _reconstruct_persistent_obj(meta)`` with the class name, the source ``module_src`` and the object's
    state), the network's submodules plain ``torch.nn.Module`` objects holding the tensors of ``state``
    (a flat state dict under the official names) as parameters, ``resample_filter`` ones as buffers."""
    import collections
    import pickle
    import sys
    import types

    import torch

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
        raise RuntimeError("written for pickling only")

    class Record:
        def __init__(self, class_name: str, state: dict):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": self.class_name,
                    "state": self.state}
            return _reconstruct_persistent_obj, (meta,), None

    def node() -> dict:
        return {"training": False, "_parameters": collections.OrderedDict(), "_buffers": collections.OrderedDict(),
                "_non_persistent_buffers_set": set(), "_modules": collections.OrderedDict()}

    root = node()
    for name, tensor in state.items():
        *parents, leaf = name.split(".")
        at = root
        for part in parents:
            child = at["_modules"].get(part)
            if child is None:
                child = at["_modules"][part] = torch.nn.Module()
                child.training = False
            at = child.__dict__
        kind = "_buffers" if leaf == "resample_filter" else "_parameters"
        at[kind][leaf] = tensor.detach().clone() if kind == "_buffers" else torch.nn.Parameter(tensor.detach().clone(),
                                                                                                requires_grad=False)
    model = Record(model_class, {**root, "_init_kwargs": dict(model_kwargs), "_init_args": ()})
    precond_state = {**node(), **precond, "_init_args": (), "_init_kwargs": dict(precond)}
    precond_state["_modules"]["model"] = model
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _reconstruct_persistent_obj.__module__, _reconstruct_persistent_obj.__qualname__ = (
        "torch_utils.persistence", "_reconstruct_persistent_obj")
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = types.ModuleType("torch_utils"), fake
    try:
        path = Path(path)
        with path.open("wb") as fh:
            pickle.dump({"ema": Record("IMMPrecond", precond_state)}, fh, protocol=4)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return path
