"""``fewstep encode``: an image dataset through a (tiny, random) AutoencoderKL into latents that train and
decode; a VAE that cannot be loaded and a bad --set are one line."""
from __future__ import annotations

import json

import pytest
import torch

from fewstep.data.latents import LatentDataset


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return tiny_vae(tmp_path_factory.mktemp("vae"))


def test_encode_cli_writes_latents_that_train_and_decode(vae_dir, tmp_path, cli):
    out = tmp_path / "lat"
    res = cli("encode", "--data", "digits", "--set", "data.size=16", "--vae", vae_dir, "--out", out, "--batch", 256)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["n"], meta["image_shape"], meta["latent_shape"]) == (1797, [1, 16, 16], [4, 8, 8])
    ds = LatentDataset(out, sigma_d=0.5, conditional=True)
    b = ds.sample(4096, torch.Generator().manual_seed(0))
    assert b.x.shape == (4096, 4, 8, 8) and b.cond.shape == (4096,) and ds.num_classes == 10
    per_channel = b.x.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=0.05)  # normalised per channel ...
    std = per_channel.std(1)
    assert torch.all((std > 0.45) & (std < 0.6))  # ... to about sigma_d (+ the posterior std)
    images = ds.to_uint8(b.x[:3])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)


def test_a_vae_that_cannot_be_loaded_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = cli("encode", "--data", "digits", "--vae", tmp_path / "novae", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: vae '{tmp_path / 'novae'}' could not be loaded")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, expect", [
    ("data.size=12", "--set data.size: input should be 8, 16 or 32"),
    ("data.size=true", "--set data.size: expected a number, not the boolean true"),
    ("train.steps=3", "--set train.steps=3: encode takes data.<field>=value"),
])
def test_bad_data_flags_are_one_line(tmp_path, cli, flag, expect):
    res = cli("encode", "--data", "digits", "--set", flag, "--vae", tmp_path / "novae", "--out", tmp_path / "o")
    assert res.exit_code == 2 and expect in res.stderr.strip().splitlines()[0], res.stderr


def test_out_must_be_a_folder(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    res = cli("encode", "--data", "digits", "--vae", tmp_path / "novae", "--out", tmp_path / "file")
    assert res.exit_code == 2
    expect = f"error: --out {tmp_path / 'file'}: is a file; give a folder for latents.safetensors and meta.json"
    assert res.stderr.strip() == expect
