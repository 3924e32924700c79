"""``fewstep fid-ref``: a folder's feature statistics in an .npz, the same from two torchrun processes as from
one, and usable as the reference of the metric; bad flags are one line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fewstep.testing.distributed import torchrun_env
from fewstep.testing.fixtures import image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from fewstep.eval.digits_features import load_digits_classifier

    load_digits_classifier()  # cached once, before any subprocess wants it
    root = image_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=9, size=(12, 10))
    (root / "class1" / "4.png").write_text("broken")
    return root


def test_fid_ref_of_a_folder_is_its_features_mean_and_covariance(images, tmp_path, cli):
    from fewstep.data.imagefiles import ImageFiles, list_images
    from fewstep.eval.fidref import feature_extractor

    out = tmp_path / "ref.npz"
    res = cli("fid-ref", images, "--size", 8, "--features", "digits", "--out", out, "--workers", 0, "-q")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out) and "digits statistics of 26 images (64 features)" in res.stderr
    assert "skipped 1 unreadable images on rank 0: class1/4.png" in res.stderr
    files = ImageFiles(list_images(images), 8)
    readable = torch.stack([files[i].image for i in range(len(files)) if not files[i].error])
    extract, _ = feature_extractor("digits", device="cpu")
    f = extract(readable).numpy()
    with np.load(out, allow_pickle=False) as ref:
        assert np.allclose(ref["mu"], f.mean(0), rtol=1e-10, atol=1e-12)
        assert np.allclose(ref["sigma"], np.cov(f, rowvar=False), rtol=1e-8, atol=1e-10)
        assert str(ref["meta_n"]) == "26"


def test_two_processes_give_the_statistics_of_one(images, tmp_path, cli):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert cli("fid-ref", images, "--size", 8, "--features", "digits", "--out", one, "--workers", 0,
               "-q").exit_code == 0
    env = torchrun_env()
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "fewstep", "fid-ref", str(images), "--size", "8", "--features", "digits", "--out", str(two),
                          "--workers", "0", "-q"], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(two)  # rank 0 alone writes and prints
    with np.load(one) as a, np.load(two) as b:
        assert np.allclose(a["mu"], b["mu"], rtol=1e-12) and np.allclose(a["sigma"], b["sigma"], rtol=1e-9)


@pytest.mark.parametrize("args, expect", [
    ([], "give IMAGES (a folder or list file) or --data NAME, one of the two"),
    (["IMG", "--data", "digits"], "give IMAGES (a folder or list file) or --data NAME, one of the two"),
    (["IMG"], "--size: needed with IMAGES"),
    (["IMG", "--size", "8", "--set", "data.size=8"], "--set: goes with --data, not with IMAGES"),
    (["--data", "moons"], "--data moons: has no original images to read (kind points)"),
    (["--data", "digits", "--set", "data.size=3"], "--set data.size: input should be 8, 16 or 32"),
])
def test_bad_flags_are_one_line(images, tmp_path, cli, args, expect):
    args = [str(images) if a == "IMG" else a for a in args]
    res = cli("fid-ref", *args, "--out", tmp_path / "r.npz")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
    assert not (tmp_path / "r.npz").exists()


def test_out_must_be_an_npz_file(images, tmp_path, cli):
    res = cli("fid-ref", images, "--size", 8, "--out", tmp_path / "ref.txt")
    assert res.exit_code == 2 and res.stderr.strip() == f"error: --out {tmp_path / 'ref.txt'}: give a file name " \
                                                         "ending in .npz"
