"""Latents: fewstep encode with a tiny randomly initialised AutoencoderKL, the latent dataset, decoding."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from fewstep.data.latents import LatentDataset, encode_images, write_latents
from fewstep.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return tiny_vae(tmp_path_factory.mktemp("vae"))


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
    with torch.no_grad():  # (the latents to_latents gives back, not z: 1e-7 apart, which can flip a rounding)
        expected = ((vae.decode(ds.to_latents(x)).sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(ds.to_uint8(x), expected)


def test_missing_folder_bad_statistics_and_missing_labels_are_one_line(tmp_path, vae_dir):
    with pytest.raises(ConfigError, match="holds no encoded latents .*fewstep encode"):
        LatentDataset(tmp_path / "none")
    write_latents(tmp_path, torch.zeros(2, 4, 2, 2).half(), torch.ones(2, 4, 2, 2).half(), None, "x", (3, 4, 4), "t")
    with pytest.raises(ConfigError, match="need 4 values"):
        LatentDataset(tmp_path, channel_mean=[0.0, 0.0])
    with pytest.raises(ConfigError, match="encoded without labels"):
        LatentDataset(tmp_path, conditional=True)


def test_latents_say_their_fresh_samples_are_the_vaes_reconstructions(tmp_path):
    from fewstep.data.images import load_digits_dataset
    from fewstep.protocols import NotesReference
    from fewstep.testing.fixtures import encoded_latents

    latents = LatentDataset(encoded_latents(tmp_path))
    assert isinstance(latents, NotesReference) and "the VAE's reconstructions" in latents.reference_note
    assert not isinstance(load_digits_dataset(), NotesReference)
