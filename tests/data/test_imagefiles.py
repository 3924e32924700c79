"""Images on disk (fewstep/data/imagefiles.py): which files and labels, ADM's centre crop worked out by hand,
unreadable files reported rather than fatal, and DataLoader workers reading the same batches as one process."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.data.imagefiles import (
    ImageFiles,
    center_crop,
    decode,
    list_images,
    read_batches,
    read_image,
    skipped_message,
)
from fewstep.errors import ConfigError, MissingResource


def _noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _tree(root, names):
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _noise(12, 10, i).save(root / rel)
    return root


def test_class_subfolders_give_labels_in_sorted_order(tmp_path):
    _tree(tmp_path, ["zebra/b.png", "ant/x.jpg", "ant/a.png", "mid/deep/c.webp"])
    (tmp_path / "zebra" / "notes.txt").write_text("not an image suffix")
    got = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in got.files] == ["ant/a.png", "ant/x.jpg", "mid/deep/c.webp",
                                                                       "zebra/b.png"]
    assert got.classes == ("ant", "mid/deep", "zebra") and got.labels == (0, 0, 1, 2)


def test_a_flat_folder_has_no_labels(tmp_path):
    got = list_images(_tree(tmp_path, ["b.png", "a.png"]))
    assert [p.name for p in got.files] == ["a.png", "b.png"] and got.labels is None and got.classes == ()


def test_a_list_file_names_images_relative_to_itself_with_optional_labels(tmp_path):
    _tree(tmp_path, ["imgs/a.png", "imgs/b b.png"])
    listing = tmp_path / "train.txt"
    listing.write_text("# ImageNet-style list\nimgs/a.png 3\n\nimgs/b b.png 0\n")
    got = list_images(listing)
    assert got.files == (tmp_path / "imgs/a.png", tmp_path / "imgs/b b.png")  # a space inside a name is kept
    assert got.labels == (3, 0) and got.classes == ("0", "1", "2", "3")
    listing.write_text("imgs/a.png\nimgs/b b.png\n")
    assert list_images(listing).labels is None
    listing.write_text("imgs/a.png 1\nimgs/b b.png\n")
    with pytest.raises(ConfigError, match=r"train.txt:2: give a label on every line or on none"):
        list_images(listing)
    listing.write_text("# nothing\n")
    with pytest.raises(MissingResource, match="names no images"):
        list_images(listing)


def test_an_empty_folder_is_one_line(tmp_path):
    with pytest.raises(MissingResource, match="no images .* under .* and it is not a list file"):
        list_images(tmp_path)


def test_adm_centre_crop_of_a_large_image_worked_out_by_hand():
    """1024 x 768 to 256: one box halving (768 >= 512) to 512 x 384, no second (384 < 512); bicubic to
    round(512 * 256 / 384) = 341 x 256; the centre column offset (341 - 256) // 2 = 42."""
    image = _noise(1024, 768)
    halved = image.resize((512, 384), resample=Image.BOX)
    resized = halved.resize((341, 256), resample=Image.BICUBIC)
    expected = np.asarray(resized)[:, 42:42 + 256]
    assert np.array_equal(np.asarray(center_crop(image, 256)), expected)


def test_adm_centre_crop_of_a_small_tall_image_worked_out_by_hand():
    """100 x 150 to 64: no halving (100 < 128); bicubic to 64 x round(150 * 0.64) = 96; rows from 16."""
    image = _noise(100, 150, seed=1)
    expected = np.asarray(image.resize((64, 96), resample=Image.BICUBIC))[16:80]
    assert np.array_equal(np.asarray(center_crop(image, 64)), expected)


def test_read_image_converts_modes_and_reports_what_it_cannot_read(tmp_path):
    Image.new("RGBA", (20, 10), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (10, 10), 77).save(tmp_path / "grey.png")
    rgba = read_image(tmp_path / "alpha.png", 8)
    assert rgba.shape == (3, 8, 8) and rgba.dtype == torch.uint8 and rgba[:, 4, 4].tolist() == [10, 20, 30]
    assert read_image(tmp_path / "cmyk.jpg", 8).shape == (3, 8, 8)
    assert read_image(tmp_path / "grey.png", 8, channels=1).unique().tolist() == [77]
    (tmp_path / "text.png").write_text("not an image")
    _noise(64, 64).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    for name in ("text.png", "cut.jpg", "missing.png"):
        why = read_image(tmp_path / name, 8)
        assert isinstance(why, str) and why.split(":")[0] in ("UnidentifiedImageError", "OSError",
                                                              "FileNotFoundError"), (name, why)


def test_image_files_mark_unreadable_items_and_workers_read_the_same_batches(tmp_path):
    _tree(tmp_path, [f"c{i % 3}/{i:02d}.png" for i in range(11)])
    (tmp_path / "c1" / "04.png").write_text("broken")
    files = ImageFiles(list_images(tmp_path), 8)
    k = files.images.files.index(tmp_path / "c1" / "04.png")  # 5: c0/00, c0/03, c0/06, c0/09, c1/01, c1/04, ...
    bad = files[k]
    assert bad.error.startswith("UnidentifiedImageError") and bad.image.sum() == 0 and bad.label == 1
    assert files.name(k) == "c1/04.png" and k == 5
    one = list(read_batches(files, range(2, 11), batch_size=4, workers=0))
    two = list(read_batches(files, range(2, 11), batch_size=4, workers=2))
    assert [b.index.tolist() for b in one] == [[2, 3, 4, 5], [6, 7, 8, 9], [10]]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
        assert a.error == b.error
    order = [files.images.files[i].name for b in one for i in b.index.tolist()]
    assert order == [files.images.files[i].name for i in range(2, 11)]  # in the order asked
    threaded = decode(files, range(11))
    assert all(torch.equal(t.image, files[i].image) and t.error == files[i].error for i, t in enumerate(threaded))


def test_skipped_message_lists_the_first_few():
    skipped = [(f"f{i}.jpg", "OSError: truncated") for i in range(7)]
    line = skipped_message("data.root /imagenet", skipped, 1000, shown=2)
    assert line == ("data.root /imagenet: skipped 7 of 1000 images that could not be read: f0.jpg (OSError: "
                    "truncated); f1.jpg (OSError: truncated); and 5 more")
