"""A folder of images as a data set (fewstep/data/folder.py): in memory or streamed from disk, the same
batches either way, unreadable images skipped with a warning, labels from subfolders or a list file."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fewstep.data.folder import StreamedImages, load_image_folder
from fewstep.errors import ConfigError, MissingResource
from fewstep.testing.fixtures import image_folder


def _write_images(root, specs):
    for rel, (w, h), colour in specs:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), colour).save(path)


def test_image_folder_resizes_crops_and_labels_by_subfolder(tmp_path, regs):
    _write_images(tmp_path, [("cat/a.png", (40, 20), (255, 0, 0)), ("cat/b.jpg", (16, 16), (0, 255, 0)),
                             ("dog/c.png", (20, 40), (0, 0, 255))])
    img = Image.new("RGB", (32, 16), (0, 0, 0))
    img.paste((255, 255, 255), (8, 0, 24, 16))  # a white centre square on black sides
    img.save(tmp_path / "dog" / "d.png")
    entry = regs.datasets.get("image_folder")
    ds = entry.build(entry.model().model_validate({"name": "image_folder", "root": str(tmp_path), "size": 8,
                                                   "conditional": True}), 0.5)
    assert (ds.shape, len(ds), ds.num_classes) == ((3, 8, 8), 4, 2)
    assert ds.labels.tolist() == [0, 0, 1, 1]  # cat, cat, dog, dog (sorted paths)
    u8 = torch.stack([ds.originals()[i].image for i in range(4)])
    assert (u8[0, 0] > 250).all() and (u8[0, 1:] < 5).all()  # red, whatever its aspect ratio
    assert (u8[3, :, :, 1:7] > 250).all()  # the centre crop of a wide image keeps its white centre (edges: bicubic)


def test_image_folder_errors_are_one_line(tmp_path):
    with pytest.raises(MissingResource, match="no images"):
        load_image_folder(str(tmp_path), 8)
    _write_images(tmp_path, [("a.png", (8, 8), (1, 2, 3))])
    with pytest.raises(ConfigError, match="no class subfolders"):
        load_image_folder(str(tmp_path), 8, conditional=True)
    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(ConfigError, match="skipped 1 of 1 images .*a.png .*nothing left to train on"):
        load_image_folder(str(tmp_path), 8)


def test_unreadable_images_are_skipped_with_one_warning_and_their_labels_go_with_them(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", classes=2, per_class=4)
    (root / "class0" / "1.png").write_text("broken")
    (root / "class1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = load_image_folder(str(root), 8, conditional=True)
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fewstep: warning: data.root ") and "skipped 2 of 8 images that could not be read" in line
    assert "class0/1.png (UnidentifiedImageError" in line and "class1/2.png" in line


def test_streamed_and_in_memory_sets_give_the_same_batches(tmp_path):
    """Below 1024 images the streamed set's pixel moments come from every image, as the in-memory set's."""
    root = image_folder(tmp_path / "imgs", classes=3, per_class=5, size=(12, 10))
    kw = dict(conditional=True, xflip=True, augment=0.3)
    held, streamed = load_image_folder(str(root), 8, **kw), load_image_folder(str(root), 8, stream=True, **kw)
    assert isinstance(streamed, StreamedImages) and not hasattr(streamed, "pixels")
    assert (held.mean, held.std) == pytest.approx((streamed.mean, streamed.std), rel=1e-12)
    for seed in range(3):
        a = held.sample(16, torch.Generator().manual_seed(seed))
        b = streamed.sample(16, torch.Generator().manual_seed(seed))
        assert torch.equal(a.x, b.x) and torch.equal(a.cond, b.cond) and torch.equal(a.augment, b.augment)
    assert torch.equal(held.to_uint8(a.x), streamed.to_uint8(b.x))


def test_a_streamed_image_that_breaks_is_replaced_by_the_next_readable_one(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", classes=2, per_class=3)
    ds = load_image_folder(str(root), 8, conditional=True, stream=True)
    files = ds.originals()
    k = files.images.files.index(root / "class0" / "2.png")  # the last of class 0: its stand-in is class 1's first
    good_next = files[k + 1].image
    (root / "class0" / "2.png").write_text("corrupted after the listing")
    gen = torch.Generator().manual_seed(0)
    batches = [ds.sample(32, gen) for _ in range(3)]
    drawn = torch.cat([b.x for b in batches])
    assert not any(torch.equal(x, torch.zeros_like(x)) for x in drawn)
    stand_in = ds.normalise(good_next.float() / 255)
    labels = torch.cat([b.cond for b in batches])
    hits = [i for i, x in enumerate(drawn) if torch.allclose(x, stand_in)]
    assert hits and all(labels[i] == 1 for i in hits)  # the stand-in's label, not the broken file's
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class0/2.png cannot be read" in err[0]  # warned once, however often drawn


def test_a_list_file_is_a_source_too(tmp_path):
    root = image_folder(tmp_path / "imgs", classes=2, per_class=2)
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/class1/0.png 1\nimgs/class0/1.png 0\n")
    ds = load_image_folder(str(listing), 8, conditional=True)
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0] and ds.num_classes == 2
    flat = load_image_folder(str(root / "class0"), 8)
    assert len(flat) == 2 and flat.num_classes is None
