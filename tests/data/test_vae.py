"""The VAE's way in and out (fewstep/data/vae.py), with a tiny randomly initialised AutoencoderKL."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.vae import decode_uint8, encode_images, load_vae, posterior
from fewstep.errors import MissingResource


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return load_vae(str(tiny_vae(tmp_path_factory.mktemp("vae"))))


def test_posterior_is_the_encoders_distribution_of_images_in_minus_one_to_one(vae):
    u8 = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    mean, std = posterior(vae, u8)
    with torch.no_grad():
        dist = vae.encode(u8.float() / 127.5 - 1).latent_dist
    assert mean.dtype == std.dtype == torch.float16
    assert torch.equal(mean, dist.mean.half()) and torch.equal(std, dist.std.half())
    grey = u8[:, :1]
    assert torch.equal(posterior(vae, grey)[0], posterior(vae, grey.expand(-1, 3, -1, -1))[0])  # grey as RGB


def test_encode_images_in_batches_equals_one_call(vae):
    u8 = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    seen = []
    mean, std = encode_images(vae, u8, batch_size=2, progress=seen.append)
    whole = posterior(vae, u8)
    assert torch.allclose(mean.float(), whole[0].float(), atol=2e-3) and seen == [2, 4, 5]


def test_decode_uint8_maps_minus_one_to_one_onto_0_to_255(vae):
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = vae.decode(z).sample
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(decode_uint8(vae, z, batch_size=2), expected)


def test_a_vae_that_cannot_be_loaded_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingResource, match="could not be loaded .* give a local folder"):
        load_vae(str(tmp_path / "nothing"))
