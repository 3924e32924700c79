"""fewstep.testing.fixtures: the tiny VAE, the image folder and the encoded latents that the datasets read."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.testing.fixtures import encoded_latents, image_folder, tiny_vae


@pytest.fixture(scope="module")
def latents_folder(tmp_path_factory):
    return encoded_latents(tmp_path_factory.mktemp("latents"), n=24)


def test_tiny_vae_loads_and_round_trips_an_image_shape(tmp_path):
    from fewstep.data.latents import load_vae

    folder = tiny_vae(tmp_path / "vae")
    assert folder == tmp_path / "vae" and (folder / "config.json").is_file()
    vae = load_vae(str(folder))
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    assert sum(p.numel() for p in vae.parameters()) < 100_000  # tiny
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(image).latent_dist.mean
        back = vae.decode(z).sample
    assert z.shape == (2, 4, 8, 8)  # 4 latent channels, spatial factor 2
    assert back.shape == image.shape


def test_tiny_vae_is_seeded_and_leaves_the_global_rng_alone(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    tiny_vae(tmp_path / "a")
    assert torch.equal(torch.rand(3), expected)
    tiny_vae(tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_image_folder_makes_class_subfolders_of_seeded_pngs(tmp_path):
    root = image_folder(tmp_path / "imgs", classes=3, per_class=2, size=(14, 10))
    assert root == tmp_path / "imgs"
    assert sorted(p.name for p in root.iterdir()) == ["class0", "class1", "class2"]
    files = sorted(root.rglob("*.png"))
    assert len(files) == 6
    with Image.open(files[0]) as im:
        assert im.size == (14, 10) and im.mode == "RGB"
    again = image_folder(tmp_path / "again", classes=3, per_class=2, size=(14, 10))
    for f in files:
        with Image.open(f) as a, Image.open(again / f.relative_to(root)) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_image_folder_is_read_by_the_image_folder_dataset(tmp_path):
    from fewstep.data.folder import load_image_folder

    root = image_folder(tmp_path / "imgs", classes=2, per_class=4)
    data = load_image_folder(str(root), 8, conditional=True)
    assert len(data) == 8 and data.shape == (3, 8, 8) and data.num_classes == 2
    assert data.labels.tolist() == [0] * 4 + [1] * 4
    assert data.originals()[7].image.dtype == torch.uint8 and data.originals()[7].label == 1


def test_encoded_latents_make_a_folder_the_latents_dataset_reads(latents_folder):
    from fewstep.data.latents import LatentDataset

    meta = json.loads((latents_folder / "meta.json").read_text())
    assert meta["n"] == 24 and meta["latent_shape"] == [4, 8, 8] and meta["image_shape"] == [1, 16, 16]
    assert meta["vae"] == str(latents_folder.parent / "vae")
    data = LatentDataset(latents_folder, sigma_d=0.5, conditional=True)
    assert len(data) == 24 and data.shape == (4, 8, 8)
    from sklearn.datasets import load_digits

    labels = load_digits().target[:24]
    assert data.num_classes == int(labels.max()) + 1
    assert data.labels.tolist() == labels.tolist()  # the first n digits, in order
    batch = data.sample(5, torch.Generator().manual_seed(0))
    assert batch.x.shape == (5, 4, 8, 8) and batch.cond.shape == (5,)
    assert data.to_uint8(batch.x).shape == (5, 3, 16, 16)  # decoded by the stored VAE
