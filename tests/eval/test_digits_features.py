"""fewstep.eval.digits_features: the digits split, the cached classifier, its accuracy and cache dir."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fewstep.eval import digits_features as df


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A fresh FEWSTEP_CACHE with the seed-0 classifier trained into it once (a few seconds)."""
    root = tmp_path_factory.mktemp("digits_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(root))
        path = df.classifier_path()
        assert not path.exists()
        model = df.load_digits_classifier()
        yield {"root": root, "path": path, "model": model}


def test_cache_dir_honours_fewstep_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path / "c"))
    assert df.cache_dir() == tmp_path / "c"
    assert df.classifier_path(3) == tmp_path / "c" / f"digits_classifier_v{df.DIGITS_VERSION}_seed3.safetensors"
    monkeypatch.setenv("FEWSTEP_CACHE", "~/somewhere")
    assert df.cache_dir() == Path.home() / "somewhere"
    monkeypatch.delenv("FEWSTEP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert df.cache_dir() == tmp_path / "xdg" / "fewstep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert df.cache_dir() == Path.home() / ".cache" / "fewstep"
    assert not (tmp_path / "c").exists()  # naming the folder does not create it


def test_digits_split_is_deterministic_disjoint_and_complete():
    from sklearn.datasets import load_digits

    x_tr, y_tr, x_te, y_te = df.digits_split(0)
    assert x_tr.shape == (1438, 1, 8, 8) and x_te.shape == (359, 1, 8, 8)  # round(0.2 * 1797) held out
    assert float(x_tr.min()) >= 0 and float(x_tr.max()) == 1.0  # pixels 0..16 scaled to [0, 1]
    again = df.digits_split(0)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again))
    images = torch.as_tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    index = {bytes(img.numpy().tobytes()): i for i, img in enumerate(images)}  # digits' images are distinct
    tr = [index[bytes(img.numpy().tobytes())] for img in x_tr]
    te = [index[bytes(img.numpy().tobytes())] for img in x_te]
    assert not set(tr) & set(te) and sorted(tr + te) == list(range(1797))
    labels = torch.as_tensor(load_digits().target)
    assert torch.equal(y_tr, labels[tr]) and torch.equal(y_te, labels[te])  # images keep their labels
    other = df.digits_split(1)
    assert not torch.equal(other[3], y_te)  # another seed, another split
    assert df.digits_split(0, holdout=0.5)[2].shape[0] == 898  # round(0.5 * 1797)


def test_the_cached_classifier_is_accurate_on_the_held_out_split(cached):
    model = cached["model"]
    _, _, x_te, y_te = df.digits_split(0)
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).double().mean().item()
    assert acc > 0.95
    assert df.digits_accuracy(model) == pytest.approx(acc)


def test_digits_accuracy_of_a_constant_classifier_is_the_share_of_its_class():
    class AlwaysThree(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 3] = 1.0
            return out

    _, _, _, y_te = df.digits_split(0)
    assert df.digits_accuracy(AlwaysThree()) == pytest.approx((y_te == 3).double().mean().item())


def test_features_have_unit_mean_square_on_the_training_images(cached):
    x_tr = df.digits_split(0)[0]
    with torch.no_grad():
        ms = cached["model"].features(x_tr).pow(2).mean().item()
    assert ms == pytest.approx(1.0, rel=1e-4)


def test_a_second_load_reuses_the_cached_file(cached, monkeypatch):
    monkeypatch.setenv("FEWSTEP_CACHE", str(cached["root"]))
    path = cached["path"]
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))  # a second back, so a rewrite would show
    again = df.load_digits_classifier()
    assert path.stat().st_mtime_ns == before - 10**9  # not rewritten, so not retrained
    for (k, a), b in zip(cached["model"].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert again.heldout_accuracy == pytest.approx(cached["model"].heldout_accuracy, abs=1e-6)
    assert not again.training and not any(p.requires_grad for p in again.parameters())
    explicit = df.load_digits_classifier(path=path)  # an explicit file loads the same weights
    assert torch.equal(explicit.fc2.weight, again.fc2.weight)


def test_a_corrupt_cache_file_is_retrained_and_replaced(cached, monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    path = df.classifier_path()
    path.write_bytes(b"truncated")
    calls = []

    def quick(seed):
        calls.append(seed)
        return cached["model"]  # stands in for a fresh training run

    monkeypatch.setattr(df, "train_digits_classifier", quick)
    model = df.load_digits_classifier()
    assert calls == [0] and model is cached["model"]
    reloaded = df.load_digits_classifier()  # now read from the rewritten file
    assert calls == [0] and torch.equal(reloaded.fc1.weight, model.fc1.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporaries left


def test_an_explicit_path_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        df.load_digits_classifier(path=tmp_path / "missing.safetensors")
    assert not (tmp_path / "missing.safetensors").exists()  # and nothing is trained in its place
