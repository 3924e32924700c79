"""The in-memory image dataset and sklearn's bundled digits (offline)."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.images import ImageDataset, digits_pixels, load_digits_dataset


def test_digits_load_offline_as_standardised_images():
    ds = load_digits_dataset()
    assert (ds.kind, ds.shape, len(ds), ds.num_classes) == ("images", (1, 8, 8), 1797, None)
    big = ds.sample(20000, torch.Generator().manual_seed(0))
    assert big.cond is None and big.x.shape == (20000, 1, 8, 8)
    assert big.x.std().item() == pytest.approx(0.5, rel=0.03)  # overall std sigma_d, as every dataset
    assert big.x.mean().item() == pytest.approx(0.0, abs=0.02)


def test_sampling_is_seeded_and_uint8_inverts_the_standardisation():
    ds = load_digits_dataset()
    a = ds.sample(64, torch.Generator().manual_seed(3)).x
    assert torch.equal(a, ds.sample(64, torch.Generator().manual_seed(3)).x)
    u8 = ds.to_uint8(a)
    pixels, _ = digits_pixels()
    assert u8.dtype == torch.uint8 and u8.shape == a.shape
    # every sampled image is one of the originals, back at its 0..255 pixels
    orig = (pixels * 255).round().to(torch.uint8).flatten(1)
    assert all((orig == img.flatten()).all(1).any() for img in u8)
    assert ds.to_uint8(torch.full((1, 1, 8, 8), 100.0)).max() == 255  # clamped, never wraps


@pytest.mark.parametrize("size", [16, 32])
def test_upsampled_sizes(size):
    pixels, labels = digits_pixels(size)
    assert pixels.shape == (1797, 1, size, size) and 0 <= pixels.min() and pixels.max() <= 1
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))


def test_conditional_digits_carry_labels_that_match_the_images():
    ds = load_digits_dataset(conditional=True)
    assert ds.num_classes == 10
    b = ds.sample(32, torch.Generator().manual_seed(1))
    pixels, labels = digits_pixels()
    for x, c in zip(ds.to_uint8(b.x), b.cond):
        idx = ((pixels * 255).round().to(torch.uint8) == x).flatten(1).all(1).nonzero().flatten()
        assert c.item() in labels[idx].tolist()


def test_xflip_mirrors_about_half_of_the_batch():
    pixels = torch.zeros(1, 1, 4, 4)
    pixels[..., 0] = 1.0  # left column lit
    ds = ImageDataset(pixels, sigma_d=0.5, xflip=True)
    x = ds.to_uint8(ds.sample(1000, torch.Generator().manual_seed(0)).x)
    flipped = (x[:, 0, 0, -1] == 255).float().mean().item()
    assert 0.45 < flipped < 0.55


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ImageDataset(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="needs labels"):
        ImageDataset(torch.rand(3, 1, 8, 8), conditional=True)
    with pytest.raises(ValueError, match="all pixels are equal"):
        ImageDataset(torch.zeros(3, 1, 8, 8))


def test_digits_is_registered_and_buildable(regs):
    entry = regs.datasets.get("digits")
    ds = entry.build(entry.model().model_validate({"name": "digits", "size": 16, "conditional": True}), 0.5)
    assert ds.shape == (1, 16, 16) and ds.num_classes == 10


def test_originals_are_the_stored_images_as_uint8_items():
    ds = load_digits_dataset()
    pixels, labels = digits_pixels()
    items = ds.originals()
    assert len(items) == 1797 and items.name(5) == "digits[5]"
    item = items[5]
    assert item.index == 5 and item.error == "" and item.label == int(labels[5])
    assert torch.equal(item.image, (pixels[5] * 255).round().to(torch.uint8))
