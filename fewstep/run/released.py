"""The released IMM checkpoints (Hugging Face ``lumaai/imm``: ``cifar10.pt``, ``imagenet256_ts_a2.pkl``,
``imagenet256_s_a1.pkl``) as fewstep run directories.

Each file is an EDM persistence pickle ``{"ema": IMMPrecond}``, read by
:func:`fewstep.run.pickles.load_persistence_pickle` (no code in it runs). The IMMPrecond's attributes
give the interpolant (``noise_schedule``, ``sigma_data``, ``eps``, ``T``), the flow map (``f_type``,
``temb_type``, ``time_scale``) and the data's shape and labels; its network's recorded constructor
arguments give the backbone: EDM's ``SongUNet`` becomes ``ddpmpp`` (the same tensor names) and the
official ``DiT``/``DiT_<size>_<patch>`` becomes ``dit`` (renamed by :data:`DIT_NAMES`). Every tensor of
the checkpoint must land on exactly one tensor of the fewstep network, with its shape, or the import
is refused. The run gets the EMA weights (as raw and EMA weights), a recipe with IMM's Table 5 values
for what a checkpoint does not record (the objective, the training budget) and the released
generation configs' samplers, and a checkpoint marked finished, which ``fewstep eval``,
``fewstep sample`` and ``train.init`` use like any run's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fewstep.errors import CheckpointError
from fewstep.run.pickles import Persistent, load_persistence_pickle, state_dict

__all__ = ["DIT_NAMES", "import_checkpoint", "read_released"]

# the official DiT's tensor names -> fewstep's dit (prefixes; the rest of each name is kept)
DIT_NAMES = (
    ("x_embedder.proj.", "embed."), ("t_embedder.mlp.", "cond.t_embed.mlp."), ("s_embedder.mlp.", "cond.s_embed.mlp."),
    ("y_embedder.embedding_table.", "cond.label_embed."), ("final_layer.adaLN_modulation.", "final.ada."),
    ("final_layer.linear.", "final.linear."),
)
_DIT_BLOCK = (("attn.qkv.", "qkv."), ("attn.proj.", "proj."), ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.3."),
              ("adaLN_modulation.", "ada."))
_DIT_CLASS = re.compile(r"^DiT_(S|B|L|XL)_(\d+)$")

# IMM Table 5 (and the released generation configs) for what a checkpoint does not record
_CIFAR = {"objective": {"name": "imm", "group_size": 4, "kernel": "laplace", "mapping": "eta", "k": 15, "a": 1, "b": 5},
          "sampler": {"name": "pushforward", "schedule": "eta", "mid_etas": [1.4]},   # cifar10_generate_images.yaml
          "train": {"steps": 400_000, "batch_size": 4096, "optimizer": "radam", "lr": 1e-4, "ema_decay": 0.9999},
          "eval": {"steps": [1, 2], "reference_steps": None, "n_samples": 50_000, "batch_size": 1000,
                   "metrics": [{"name": "fid", "reference": "cifar10-train"}]}}
_IMAGENET = {"objective": {"name": "imm", "group_size": 4, "kernel": "laplace", "mapping": "eta", "k": 12, "a": 1,
                           "b": 4, "label_dropout": 0.1},
             "sampler": {"name": "pushforward", "schedule": "uniform", "guidance": 1.5},  # im256_generate_images.yaml
             "train": {"steps": 1_200_000, "batch_size": 4096, "optimizer": "adamw", "lr": 1e-4, "ema_decay": 0.9999},
             "eval": {"steps": [1, 2, 4, 8], "reference_steps": None, "n_samples": 50_000, "batch_size": 250,
                      "metrics": [{"name": "fid"}]}}
_IMAGENET_STATS = {"channel_mean": [0.86488, -0.27787343, 0.21616915, 0.3738409],  # im256_generate_images.yaml
                   "channel_std": [4.85503674, 5.31922414, 3.93725398, 3.9870003]}


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not an IMM checkpoint fewstep can map: {why}")


def _ddpmpp(path: Path, kwargs: dict) -> dict:
    """SongUNet's constructor arguments -> a ddpmpp section (EDM's SongUNet defaults where not recorded)."""
    expect = {"embedding_type": "positional", "encoder_type": "standard", "decoder_type": "standard",
              "channel_mult_noise": 1, "resample_filter": [1, 1], "channel_mult_emb": 4}
    for key, value in expect.items():
        got = kwargs.get(key, value)
        if (list(got) if isinstance(value, list) else got) != value:
            raise _refuse(path, f"SongUNet with {key}={got!r} is not DDPM++ (needs {value!r})")
    return {"name": "ddpmpp", "model_channels": kwargs.get("model_channels", 128),
            "channel_mult": list(kwargs.get("channel_mult", [1, 2, 2, 2])), "num_blocks": kwargs.get("num_blocks", 4),
            "attn_resolutions": list(kwargs.get("attn_resolutions", [16])), "dropout": kwargs.get("dropout", 0.10),
            "channel_mult_emb": kwargs.get("channel_mult_emb", 4), "augment_dim": kwargs.get("augment_dim", 0)}


def _dit(path: Path, class_name: str, kwargs: dict) -> dict:
    """The official DiT's class and constructor arguments -> a dit section."""
    for key, value in (("temb_mult", 1), ("qk_norm", False), ("skip", False), ("class_dropout_prob", 0)):
        if kwargs.get(key, value) != value:
            raise _refuse(path, f"DiT with {key}={kwargs[key]!r} (fewstep's dit has {key}={value!r})")
    if (kwargs.get("embedding_kwargs") or {}).get("embedding_type", "positional") != "positional":
        raise _refuse(path, "DiT with Fourier time features (fewstep's dit has positional ones)")
    section = {"name": "dit", "mlp_ratio": kwargs.get("mlp_ratio", 4.0), "dropout": kwargs.get("dropout", 0.0)}
    match = _DIT_CLASS.match(class_name)
    if match:
        return {**section, "size": match.group(1), "patch": int(match.group(2))}
    return {**section, "size": None, "hidden": kwargs.get("hidden_size", 1152), "depth": kwargs.get("depth", 28),
            "heads": kwargs.get("num_heads", 16), "patch": kwargs.get("patch_size", 2)}


def _rename_dit(name: str) -> str:
    for old, new in DIT_NAMES:
        if name.startswith(old):
            return new + name[len(old):]
    if name.startswith("blocks."):
        _, index, rest = name.split(".", 2)
        for old, new in _DIT_BLOCK:
            if rest.startswith(old):
                return f"blocks.{index}.{new}{rest[len(old):]}"
    return name


def read_released(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(recipe sections, fewstep-named state dict) of a released IMM checkpoint."""
    path = Path(path)
    data = load_persistence_pickle(path)
    precond = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(precond, Persistent) or precond.class_name != "IMMPrecond":
        raise _refuse(path, "expected a pickle of {'ema': IMMPrecond}")
    p = precond.state
    model = (p.get("_modules") or {}).get("model")
    if not isinstance(model, Persistent):
        raise _refuse(path, "the IMMPrecond holds no network")
    kwargs = dict(model.state.get("_init_kwargs") or {})
    if model.class_name == "SongUNet":
        network, tensors = _ddpmpp(path, kwargs), state_dict(model)
    elif model.class_name == "DiT" or _DIT_CLASS.match(model.class_name):
        network = _dit(path, model.class_name, kwargs)
        tensors = {_rename_dit(k): v for k, v in state_dict(model).items()}
    else:
        raise _refuse(path, f"its network is a {model.class_name} (fewstep maps SongUNet and DiT)")
    s_embed = kwargs.get("s_embed", True)
    second = "none" if not s_embed else {"identity": "s", "stride": "stride"}.get(p.get("temb_type"))
    if second is None:
        raise _refuse(path, f"second time input temb_type={p.get('temb_type')!r} (fewstep has identity and stride)")
    schedule = {"fm": "ot_fm", "vp_cosine": "vp_cosine"}.get(p.get("noise_schedule"))
    if schedule is None:
        raise _refuse(path, f"noise_schedule={p.get('noise_schedule')!r} (fewstep has fm and vp_cosine)")
    channels, res, labels = int(p.get("img_channels", 3)), int(p.get("img_resolution", 32)), int(p.get("label_dim", 0))
    if channels == 4:  # sd-vae latents (IMM App. I.1): the latents a user encodes, with IMM's statistics
        defaults, data = _IMAGENET, {"name": "latents", "conditional": labels > 0, **_IMAGENET_STATS}
    elif (channels, res, labels) == (3, 32, 0):
        defaults, data = _CIFAR, {"name": "cifar10", "root": "data"}
    else:
        defaults, data = _CIFAR, {"name": "image_folder", "size": res, "channels": channels, "conditional": labels > 0}
    recipe = {
        "data": data, "network": network,
        "interpolant": {"name": schedule, "sigma_d": float(p.get("sigma_data", 0.5)), "eps": float(p.get("eps", 0.0)),
                        "T": float(p.get("T", 0.994))},
        "flowmap": {"parameterisation": p.get("f_type", "euler_fm"), "second_time": second,
                    "time_scale": float(p.get("time_scale", 1000.0))},
        **{k: dict(v) for k, v in defaults.items()},
        "output": {"name": path.stem},
    }
    return recipe, tensors


def _matched(path: Path, net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Every checkpoint tensor on exactly one network tensor, with its shape (else one CheckpointError line)."""
    own = net.state_dict()
    missing, unused = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    if missing or unused or shapes:
        what = (f"the network needs {missing[:3]}" if missing else f"unused tensors {unused[:3]}" if unused
                else f"shapes differ: {shapes[:3]}")
        raise CheckpointError(f"{path}: does not map onto fewstep's network one to one ({what})")


def import_checkpoint(path: str | Path, out: str | Path, overrides=(), registries=None) -> Path:
    """Write ``out`` as a finished fewstep run of the released checkpoint ``path`` (see the module
    docstring); ``overrides`` are ``--set`` items applied to the recipe (e.g. ``data.root=...``)."""
    from fewstep.config import recipe_dict
    from fewstep.config.recipe import resolve_sampler, validate
    from fewstep.config.source import Source, apply_overrides
    from fewstep.networks import NetworkSpec
    from fewstep.plugins import get_registries
    from fewstep.run.checkpoint import STATE_FORMAT, save_checkpoint
    from fewstep.run.rundir import write_recipe

    path, out = Path(path), Path(out)
    if (out / "recipe.yaml").exists() or (out / "checkpoints").exists():
        raise CheckpointError(f"--out {out}: already holds a run; choose another folder")
    regs = registries or get_registries()
    sections, tensors = read_released(path)
    source = apply_overrides(Source(f"{path.name} (imported)", sections, None), list(overrides))
    recipe = resolve_sampler(validate(source, regs), regs)
    labels = _label_dim(path, tensors) if recipe.data.model_dump().get("conditional") else None
    shape = _shape(tensors)
    with torch.device("meta"):  # no initialisation: every tensor comes from the checkpoint
        net = regs.networks.build(recipe.network, NetworkSpec(shape, labels, recipe.flowmap.second_time != "none"))
    _matched(path, net, tensors)
    net.load_state_dict(tensors, strict=True, assign=True)
    steps = recipe.train.steps
    write_recipe(out, recipe, regs)
    save_checkpoint(out, steps, net, net, {"format": STATE_FORMAT, "imported_from": str(path)}, recipe_dict(recipe))
    return out


def _shape(tensors: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """One sample's [C, H, W], read off the network's input layer (the checkpoint knows it)."""
    conv = [k for k in tensors if re.fullmatch(r"enc\.(\d+)x\1_conv\.weight", k)]
    if conv:  # ddpmpp: enc.<res>x<res>_conv takes the image
        res = int(conv[0].split(".")[1].split("x")[0])
        return int(tensors[conv[0]].shape[1]), res, res
    channels, patch = int(tensors["embed.weight"].shape[1]), int(tensors["embed.weight"].shape[2])
    side = int(round(tensors["pos_embed"].shape[1] ** 0.5)) * patch  # dit: patches x patch size
    return channels, side, side


def _label_dim(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """The number of classes the network was built for (its label table, or its label map's width)."""
    if "cond.label_embed.weight" in tensors:
        return int(tensors["cond.label_embed.weight"].shape[0]) - 1  # less the null class
    if "map_label.weight" in tensors:
        return int(tensors["map_label.weight"].shape[1])
    raise CheckpointError(f"{path}: the recipe is class-conditional but the checkpoint's network has no labels")
