"""Released IMM checkpoints as fewstep runs (fewstep/run/released.py), on checkpoints the tests write in the
released format (fewstep.testing.fixtures.persistence_pickle) from tiny fewstep networks."""
from __future__ import annotations

import pytest
import torch

from fewstep.errors import CheckpointError, RecipeError
from fewstep.networks import NetworkSpec
from fewstep.networks.ddpmpp import DDPMpp
from fewstep.networks.dit import DiT
from fewstep.run.checkpoint import checkpoint_step, latest_checkpoint, load_state
from fewstep.run.released import DIT_NAMES, import_checkpoint, read_released
from fewstep.run.rundir import is_finished, load_run_recipe
from fewstep.testing.fixtures import persistence_pickle

SONG = {"model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0,
        "embedding_type": "positional", "encoder_type": "standard", "decoder_type": "standard",
        "channel_mult_noise": 1, "resample_filter": [1, 1], "s_embed": True}
CIFAR_PRECOND = {"img_resolution": 32, "img_channels": 3, "label_dim": 0, "noise_schedule": "fm",
                 "f_type": "simple_edm", "temb_type": "identity", "time_scale": 1000, "sigma_data": 0.5, "eps": 0.006,
                 "T": 0.994}
DIT_PRECOND = {"img_resolution": 8, "img_channels": 4, "label_dim": 10, "noise_schedule": "fm", "f_type": "euler_fm",
               "temb_type": "stride", "time_scale": 1000, "sigma_data": 0.5, "eps": 0.0, "T": 0.994}


def ddpmpp_checkpoint(tmp_path, **precond):
    torch.manual_seed(0)
    net = DDPMpp(NetworkSpec((3, 32, 32), None, True), **{k: SONG[k] for k in
                                                          ("model_channels", "num_blocks", "dropout")},
                 channel_mult=tuple(SONG["channel_mult"]), attn_resolutions=tuple(SONG["attn_resolutions"]))
    path = persistence_pickle(tmp_path / "cifar10.pt", net.state_dict(), model_class="SongUNet", model_kwargs=SONG,
                              precond={**CIFAR_PRECOND, **precond})
    return path, net


def official_dit_names(state):
    """fewstep's dit names -> the official DiT's (the inverse of DIT_NAMES and the block renames)."""
    blocks = (("qkv.", "attn.qkv."), ("proj.", "attn.proj."), ("mlp.0.", "mlp.fc1."), ("mlp.3.", "mlp.fc2."),
              ("ada.", "adaLN_modulation."))
    out = {}
    for name, value in state.items():
        for official, ours in DIT_NAMES:
            if name.startswith(ours):
                name = official + name[len(ours):]
                break
        else:
            if name.startswith("blocks."):
                _, i, rest = name.split(".", 2)
                new, old = next((n, o) for o, n in blocks if rest.startswith(o))
                name = f"blocks.{i}.{new}{rest[len(old):]}"
        out[name] = value
    return out


def dit_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = DiT(NetworkSpec((4, 8, 8), 10, True), hidden=32, depth=2, heads=2, patch=2)
    kwargs = {"hidden_size": 32, "depth": 2, "num_heads": 2, "patch_size": 2, "num_classes": 10, "s_embed": True}
    path = persistence_pickle(tmp_path / "imagenet256_ts_a2.pkl", official_dit_names(net.state_dict()),
                              model_class="DiT", model_kwargs=kwargs, precond=DIT_PRECOND)
    return path, net


def test_a_cifar10_checkpoint_becomes_a_finished_ddpmpp_run(tmp_path, regs):
    path, net = ddpmpp_checkpoint(tmp_path)
    run = import_checkpoint(path, tmp_path / "run", registries=regs)
    recipe = load_run_recipe(run, regs)
    assert (recipe.data.name, recipe.network.name, recipe.network.model_channels) == ("cifar10", "ddpmpp", 16)
    assert (recipe.flowmap.parameterisation, recipe.flowmap.second_time) == ("simple_edm", "s")
    assert (recipe.interpolant.eps, recipe.interpolant.T) == (0.006, 0.994)
    assert (recipe.sampler.name, recipe.sampler.schedule, recipe.sampler.mid_etas) == ("pushforward", "eta", [1.4])
    ckpt = latest_checkpoint(run)
    assert checkpoint_step(ckpt) == recipe.train.steps == 400_000 and is_finished(run)
    assert load_state(ckpt)["imported_from"] == str(path)
    from safetensors.torch import load_file

    for file in ("ema.safetensors", "model.safetensors"):
        got = load_file(str(ckpt / file))
        assert got.keys() == net.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())


def test_a_dit_checkpoint_maps_every_tensor_once_and_keeps_its_labels_and_stride(tmp_path, regs):
    path, net = dit_checkpoint(tmp_path)
    sections, tensors = read_released(path)
    assert sections["network"] | {"size": None} == {"name": "dit", "mlp_ratio": 4.0, "dropout": 0.0, "size": None,
                                                    "hidden": 32, "depth": 2, "heads": 2, "patch": 2}
    assert sections["flowmap"]["second_time"] == "stride" and sections["data"]["conditional"] is True
    assert tensors.keys() == net.state_dict().keys()  # one to one after renaming
    assert all(torch.equal(tensors[k], v) for k, v in net.state_dict().items())
    with pytest.raises(RecipeError, match="data.root: field required"):  # latents need the encoded set
        import_checkpoint(path, tmp_path / "run", registries=regs)
    run = import_checkpoint(path, tmp_path / "run", ["data.root=data/latents"], registries=regs)
    recipe = load_run_recipe(run, regs)
    assert (recipe.sampler.schedule, recipe.sampler.guidance) == ("uniform", 1.5)  # the released config's


def test_the_official_dit_class_names_give_the_size_and_patch(tmp_path):
    from fewstep.run.released import _dit

    assert _dit(tmp_path, "DiT_XL_2", {"s_embed": True})["size"] == "XL"
    assert _dit(tmp_path, "DiT_B_4", {})["patch"] == 4
    with pytest.raises(CheckpointError, match="class_dropout_prob=0.1"):
        _dit(tmp_path, "DiT_XL_2", {"class_dropout_prob": 0.1})


@pytest.mark.parametrize("change, expect", [
    ({"temb_type": "log"}, "second time input temb_type='log'"),
    ({"noise_schedule": "ve"}, "noise_schedule='ve'"),
])
def test_checkpoints_fewstep_cannot_map_are_refused_in_one_line(tmp_path, change, expect):
    path, _ = ddpmpp_checkpoint(tmp_path, **change)
    with pytest.raises(CheckpointError) as exc:
        read_released(path)
    assert str(exc.value).startswith(f"{path}: not an IMM checkpoint fewstep can map: ") and expect in str(exc.value)


def test_a_tensor_that_maps_nowhere_or_a_wrong_shape_is_refused(tmp_path, regs):
    torch.manual_seed(0)
    net = DDPMpp(NetworkSpec((3, 32, 32), None, True), model_channels=16, channel_mult=(1, 2), num_blocks=1,
                 attn_resolutions=(4,), dropout=0.0)
    extra = {**net.state_dict(), "map_extra.weight": torch.ones(2)}
    path = persistence_pickle(tmp_path / "x.pt", extra, model_class="SongUNet", model_kwargs=SONG,
                              precond=CIFAR_PRECOND)
    with pytest.raises(CheckpointError, match=r"does not map onto fewstep's network one to one \(unused tensors "
                                              r"\['map_extra.weight'\]\)"):
        import_checkpoint(path, tmp_path / "run", registries=regs)
    assert not (tmp_path / "run").exists()
    wrong = {**net.state_dict(), "map_layer0.bias": torch.ones(3)}
    path = persistence_pickle(tmp_path / "y.pt", wrong, model_class="SongUNet", model_kwargs=SONG,
                              precond=CIFAR_PRECOND)
    with pytest.raises(CheckpointError, match="shapes differ: \\['map_layer0.bias \\(3,\\) vs \\(64,\\)'\\]"):
        import_checkpoint(path, tmp_path / "run", registries=regs)


def test_an_existing_run_is_not_overwritten(tmp_path, regs):
    path, _ = ddpmpp_checkpoint(tmp_path)
    import_checkpoint(path, tmp_path / "run", registries=regs)
    with pytest.raises(CheckpointError, match="already holds a run"):
        import_checkpoint(path, tmp_path / "run", registries=regs)
