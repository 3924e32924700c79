"""Encoding at scale (fewstep/data/encode.py): shards hold every readable image's posterior and label in
order, unreadable images are listed, an interrupted encode resumes to the same shards, another plan is refused
(or replaced with force)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from fewstep.data.encode import encode_source, summary
from fewstep.data.imagefiles import ImageFiles, list_images
from fewstep.data.latentfiles import LatentFiles, shard_path
from fewstep.data.vae import load_vae, posterior
from fewstep.errors import ConfigError
from fewstep.testing.fixtures import image_folder

PLAN = {"source": "test folder", "vae": "tiny", "image_shape": [3, 16, 16], "labels": True, "classes": 3}


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return load_vae(str(tiny_vae(tmp_path_factory.mktemp("vae"))))


@pytest.fixture
def source(tmp_path):
    """21 images in 3 classes (sorted: class0/0..6, class1/0..6, class2/0..6); class0/3 and class1/6 broken."""
    root = image_folder(tmp_path / "imgs", classes=3, per_class=7, size=(20, 16))
    (root / "class0" / "3.png").write_text("broken")
    (root / "class1" / "6.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    return ImageFiles(list_images(root), 16)


def test_shards_hold_each_readable_images_posterior_and_label_in_order(source, vae, tmp_path):
    out = tmp_path / "lat"
    result = encode_source(source, vae, out, plan=PLAN, shard_size=5, batch_size=2)
    readable = [i for i in range(21) if i not in (3, 13)]
    meta = json.loads((out / "meta.json").read_text())
    assert meta == result.meta and (meta["n"], meta["skipped"], meta["classes"]) == (19, 2, 3)
    assert [name for name, _ in meta["skipped_images"]] == ["class0/3.png", "class1/6.png"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"0000{k}.safetensors" for k in range(5)]
    files = LatentFiles(out)
    assert files.rows("index", range(19)).tolist() == readable
    assert files.labels.tolist() == [i // 7 for i in readable]
    for row, i in enumerate(readable):  # each image alone through the VAE: batching changes nothing but rounding
        mean, std = posterior(vae, source[i].image[None])
        assert torch.allclose(files.rows("mean", [row]).float(), mean.float(), atol=2e-3)
        assert torch.allclose(files.rows("std", [row]).float(), std.float(), atol=2e-3)
    lines = summary(result, meta)
    assert lines[0] == f"encoded 19 images (3, 16, 16) -> latents (4, 8, 8) in {out}"
    assert "3 classes" in lines and "skipped 2 of 21 images" in lines[-1] and "meta.json" in lines[-1]


def test_xflip_stores_the_encodings_of_the_mirrored_images(source, vae, tmp_path):
    out = tmp_path / "lat"
    encode_source(source, vae, out, plan=PLAN, shard_size=8, batch_size=4, xflip=True)
    files = LatentFiles(out)
    mirrored, _ = posterior(vae, source[0].image.flip(-1)[None])
    assert torch.allclose(files.rows("mean_flip", [0]).float(), mirrored.float(), atol=2e-3)
    assert not torch.allclose(files.rows("mean", [0]).float(), mirrored.float(), atol=2e-3)
    assert json.loads((out / "meta.json").read_text())["xflip"] is True


def test_an_interrupted_encode_resumes_to_the_shards_of_an_uninterrupted_one(source, vae, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    encode_source(source, vae, whole, plan=PLAN, shard_size=5, batch_size=2)

    def crash(done, total, rate):
        if done >= 12:  # in the third shard
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_source(source, vae, cut, plan=PLAN, shard_size=5, batch_size=2, progress=crash)
    kept = sorted(p.name for p in (cut / "shards").iterdir())
    assert kept == ["00000.safetensors", "00001.safetensors"] and not (cut / "meta.json").exists()
    stamps = [shard_path(cut, k).stat().st_mtime_ns for k in (0, 1)]
    again = encode_source(source, vae, cut, plan=PLAN, shard_size=5, batch_size=2)
    assert again.shards_done == 3 and [shard_path(cut, k).stat().st_mtime_ns for k in (0, 1)] == stamps
    for k in range(5):  # (not the bytes: safetensors writes its metadata keys in no fixed order)
        a, b = safe_open(str(shard_path(cut, k)), "pt"), safe_open(str(shard_path(whole, k)), "pt")
        assert a.metadata() == b.metadata() and set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(name), b.get_tensor(name)) for name in a.keys())
    assert (cut / "meta.json").read_text() == (whole / "meta.json").read_text()
    done = encode_source(source, vae, cut, plan=PLAN, shard_size=5, batch_size=2)
    assert done.shards_done == 0 and done.meta["n"] == 19  # complete: nothing to do


def test_a_folder_holding_another_encode_is_refused_in_one_line(source, vae, tmp_path):
    out = tmp_path / "lat"
    encode_source(source, vae, out, plan=PLAN, shard_size=5, batch_size=2)
    with pytest.raises(ConfigError, match=r"--out .*lat: holds an encode with other settings \(shard_size, xflip "
                                          r"differ\); give a new folder, or --force to replace it"):
        encode_source(source, vae, out, plan=PLAN, shard_size=6, batch_size=2, xflip=True)


def test_force_replaces_an_earlier_encode_and_keeps_other_files(source, vae, tmp_path):
    out = tmp_path / "lat"
    encode_source(source, vae, out, plan=PLAN, shard_size=5, batch_size=2)
    (out / "notes.txt").write_text("mine")
    redone = encode_source(source, vae, out, plan=PLAN, shard_size=6, batch_size=2, force=True)
    assert redone.shards_done == 4 and json.loads((out / "plan.json").read_text())["shard_size"] == 6
    assert sorted(p.name for p in (out / "shards").iterdir()) == [shard_path(out, k).name for k in range(4)]
    assert (out / "notes.txt").read_text() == "mine"
    assert len(LatentFiles(out)) == 19


def test_a_shard_whose_images_are_all_unreadable_is_empty(source, vae, tmp_path):
    out = tmp_path / "lat"
    encode_source(source, vae, out, plan=PLAN, shard_size=1, batch_size=1)  # shard 3 is class0/3.png alone
    files = LatentFiles(out)
    assert len(files) == 19 and len(files.paths) == 21
    assert files.rows("index", [2, 3]).tolist() == [2, 4]
