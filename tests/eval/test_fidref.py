"""Stored reference statistics (fewstep/eval/fidref.py): the streamed moments equal numpy's mean and
covariance, FID against an .npz equals torch-fidelity's FID against the images it came from, and files
that are not statistics (or would need unpickling) are one line."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from fewstep.data.imagefiles import ImageFiles, list_images
from fewstep.errors import ConfigError, MissingResource
from fewstep.eval.fidelity import fidelity
from fewstep.eval.fidref import Moments, fidelity_to_reference, load_reference, reference_statistics, save_reference


def _u8(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (100 + shift + 30 * torch.randn(n, 1, 2, 2, generator=g)).round().clamp(0, 255).to(torch.uint8)


def test_moments_merged_from_chunks_equal_numpys_mean_and_covariance():
    f = torch.randn(301, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 7
    m = Moments(5)
    for chunk in f.split(64):
        m.add(chunk)
    mu, sigma = m.statistics()
    assert m.n == 301 and np.allclose(mu, f.numpy().mean(0), rtol=1e-13)
    assert np.allclose(sigma, np.cov(f.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
    one = Moments(5)
    one.add(f[:1])
    with pytest.raises(ConfigError, match="1 readable image"):
        one.statistics()


def test_reference_statistics_of_a_folder_equal_a_direct_computation(tmp_path, linear_extractor):
    from PIL import Image

    images = _u8(40, 1)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy(), mode="L").convert("RGB").save(tmp_path / f"{i:02d}.png")
    (tmp_path / "99.png").write_text("broken")
    source = ImageFiles(list_images(tmp_path), 2)
    mu, sigma, n, skipped = reference_statistics(source, features=linear_extractor.name, batch_size=7, device="cpu")
    f = linear_extractor.features(images).numpy()
    assert n == 40 and [name for name, _ in skipped] == ["99.png"]
    assert np.allclose(mu, f.mean(0), rtol=1e-12) and np.allclose(sigma, np.cov(f, rowvar=False), rtol=1e-10)


def test_fid_against_stored_statistics_equals_fid_against_their_images(tmp_path, linear_extractor):
    reference, samples = _u8(500, 2), _u8(300, 3, shift=12)
    f = linear_extractor.features(reference).numpy()
    path = save_reference(tmp_path / "ref.npz", f.mean(0), np.cov(f, rowvar=False), features="linear", n=500)
    name = linear_extractor.name
    stored = fidelity_to_reference(samples, path, features=name)  # (no KID: it needs reference images)
    direct = fidelity(samples, reference, features=name, kid=False, cache=False)
    assert set(stored) == {f"FD-{name}"} and stored[f"FD-{name}"] == pytest.approx(direct[f"FD-{name}"], rel=1e-9)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["meta_features"]) == "linear" and str(data["meta_n"]) == "500"


def test_reference_files_of_adm_and_clean_fid_load_by_their_key_names(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    adm = tmp_path / "VIRTUAL_imagenet256_labeled.npz"  # ADM's reference batch: images plus statistics
    np.savez(adm, arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=mu.astype(np.float32), sigma=sigma, mu_s=mu,
             sigma_s=sigma)
    got = load_reference(adm)
    assert got[0].dtype == np.float64 and np.array_equal(got[0], mu) and np.array_equal(got[1], sigma)
    clean = tmp_path / "cifar10_legacy_tensorflow_train_32.npz"  # clean-fid's statistics
    np.savez(clean, mu=mu, sigma=sigma)
    assert np.array_equal(load_reference(clean)[1], sigma)


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(p, arr_0=np.zeros(3)), "holds arr_0, not the statistics mu and sigma"),
    (lambda p: np.savez(p, mu=np.zeros(3), sigma=np.zeros((2, 2))), "mu (3,) and sigma (2, 2) do not fit"),
    (lambda p: np.savez(p, mu=np.array([0.0, np.nan]), sigma=np.eye(2)), "holds NaN or inf"),
    (lambda p: np.savez(p, mu=np.array([{"code": 1}], dtype=object), sigma=np.eye(1)),
     "not a readable .npz of statistics (ValueError: Object arrays cannot be loaded"),
    (lambda p: open(p, "wb").write(b"PK not a zip"), "not a readable .npz of statistics"),
])
def test_what_is_not_statistics_is_one_line(tmp_path, write, message):
    path = tmp_path / "ref.npz"
    write(path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_reference(path)


def test_a_missing_reference_says_how_to_make_it(tmp_path):
    with pytest.raises(MissingResource, match="no such file; make it with `fewstep fid-ref IMAGES --out"):
        load_reference(tmp_path / "none.npz")


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_edm2_statistics_pickles_load_and_hostile_ones_run_nothing(tmp_path):
    mu, sigma = np.linspace(0, 1, 4), np.diag([1.0, 2.0, 3.0, 4.0])
    good = tmp_path / "img256.pkl"  # EDM2's dataset-refs layout (lumalabs/tvm publishes img256.pkl in it)
    good.write_bytes(pickle.dumps({"fid": {"mu": mu, "sigma": sigma}, "fd_dinov2": {"mu": mu[:2]}}))
    got = load_reference(good)
    assert np.array_equal(got[0], mu) and np.array_equal(got[1], sigma)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"fid": {"mu": _Touch(marker), "sigma": sigma}}))
    with pytest.raises(ConfigError, match=r"evil.pkl: refused to load: the pickle names posix.system"):
        load_reference(evil)
    assert not marker.exists()
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"inception": [1, 2]}))
    with pytest.raises(ConfigError, match="other.pkl: holds inception, not the statistics fid.mu and fid.sigma"):
        load_reference(other)
