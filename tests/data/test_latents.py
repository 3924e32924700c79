"""Latents: fewstep encode with a tiny randomly initialised AutoencoderKL, the latent dataset, decoding."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fewstep.cli import app
from fewstep.data.latents import LatentDataset, encode_images, write_latents
from fewstep.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return tiny_vae(tmp_path_factory.mktemp("vae"))


def test_encode_cli_writes_latents_that_train_and_decode(vae_dir, tmp_path, regs):
    out = tmp_path / "lat"
    res = runner.invoke(app, ["encode", "--data", "digits", "--set", "data.size=16", "--vae", str(vae_dir),
                              "--out", str(out), "--batch", "256"])
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


def test_round_trip_of_the_normalisation_and_decoding(vae_dir, tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    u8 = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    mean, std = encode_images(vae, u8, batch_size=4)
    assert mean.shape == std.shape == (6, 4, 8, 8) and mean.dtype == torch.float16 and (std > 0).all()
    write_latents(tmp_path, mean, std, None, str(vae_dir), (3, 16, 16), "test")
    ds = LatentDataset(tmp_path, channel_mean=[0.1, 0.2, 0.3, 0.4], channel_std=[2.0, 3.0, 4.0, 5.0])
    z = mean.float()
    x = (z - ds.mu) / ds.sd * 0.5
    assert torch.allclose(ds.to_latents(x), z, atol=1e-5)  # data space -> latents inverts the normalisation
    with torch.no_grad():
        expected = ((vae.decode(z).sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(ds.to_uint8(x), expected)


def test_missing_folder_bad_statistics_and_missing_labels_are_one_line(tmp_path, vae_dir):
    with pytest.raises(ConfigError, match="holds no encoded latents .*fewstep encode"):
        LatentDataset(tmp_path / "none")
    write_latents(tmp_path, torch.zeros(2, 4, 2, 2).half(), torch.ones(2, 4, 2, 2).half(), None, "x", (3, 4, 4), "t")
    with pytest.raises(ConfigError, match="need 4 values"):
        LatentDataset(tmp_path, channel_mean=[0.0, 0.0])
    with pytest.raises(ConfigError, match="encoded without labels"):
        LatentDataset(tmp_path, conditional=True)
    res = runner.invoke(app, ["encode", "--data", "digits", "--vae", str(tmp_path / "novae"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "could not be loaded" in res.output and "Traceback" not in res.output
