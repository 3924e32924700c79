"""Image metrics through torch-fidelity: closed forms, the digits extractor, caches, offline weights."""
import shutil
import sys

import numpy as np
import pytest
import torch

from fewstep.errors import ConfigError
from fewstep.eval.fidelity import INCEPTION_FILE, UInt8Images, fidelity, inception_weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One FEWSTEP_CACHE for the module: the digits classifier trains once (a few seconds)."""
    from fewstep.eval import digits_features as df

    root = tmp_path_factory.mktemp("fewstep_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(root))
        assert not df.classifier_path().exists()
        model = df.load_digits_classifier()
        assert df.classifier_path().is_file()
        yield {"root": root, "model": model}


@pytest.fixture(scope="module")
def digits_u8():
    from fewstep.data.images import digits_pixels

    x, _ = digits_pixels(8)
    return (x * 255).round().to(torch.uint8)


def _gaussian_u8(n, mean, cov, seed):
    """uint8 [n, 1, 2, 2] images whose 4 pixels are round(N(mean, cov)) (far from the clip bounds)."""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    z = torch.randn(n, 4, generator=g, dtype=torch.float64) @ chol.T + torch.as_tensor(mean, dtype=torch.float64)
    return z.round().clamp(0, 255).to(torch.uint8).view(n, 1, 2, 2)


def test_import_does_not_load_torch_fidelity(monkeypatch):
    """Execute the module afresh with torch_fidelity/torchvision unloaded and their import blocked."""
    import importlib.util

    import fewstep.eval.fidelity as mod

    heavy = ("torch_fidelity", "torchvision")
    for name in [m for m in sys.modules if m.split(".")[0] in heavy]:
        monkeypatch.delitem(sys.modules, name)

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in heavy:
                raise ImportError(f"{name} imported at module level")

    monkeypatch.setattr(sys, "meta_path", [Block(), *sys.meta_path])
    spec = importlib.util.spec_from_file_location("_fidelity_fresh", mod.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert not [m for m in sys.modules if m.split(".")[0] in heavy]


def test_uint8_images_dataset():
    ds = UInt8Images(torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4))
    assert len(ds) == 2 and ds[1].shape == (3, 4, 4) and ds[1].dtype == torch.uint8
    assert torch.equal(ds[1][0], ds[1][2])
    assert UInt8Images(torch.zeros(3, 3, 8, 8, dtype=torch.uint8))[0].shape == (3, 8, 8)
    with pytest.raises(ValueError):
        UInt8Images(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError):
        UInt8Images(torch.zeros(2, 2, 4, 4, dtype=torch.uint8))


def frechet_distance(  # the reference the tests compare torch-fidelity with
        mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2), in float64.

    d^2 = |mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2})  (Dowson & Landau 1982; the FID formula of
    Heusel et al. 2017, arXiv:1706.08500, Sec. "FID"). ``Tr (C1 C2)^{1/2}`` is evaluated as
    ``Tr (C1^{1/2} C2 C1^{1/2})^{1/2}`` (similar matrices have equal eigenvalues), a symmetric PSD
    form computed with ``eigh`` -- a different route from torch-fidelity's ``eigvals(C1 @ C2)``.
    """
    mu1, mu2, c1, c2 = (torch.as_tensor(a).detach().to("cpu", torch.float64) for a in (mu1, mu2, cov1, cov2))
    evals, evecs = torch.linalg.eigh((c1 + c1.T) / 2)
    s1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    m = s1 @ c2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(c1) + torch.trace(c2) - 2 * tr_sqrt)


def test_frechet_distance_closed_form():
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-12)
    # Against scipy's sqrtm of C1 C2 on random SPD matrices.
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-10)
    assert abs(frechet_distance(m1, c1, m1, c1)) < 1e-10


def test_fd_of_gaussians_matches_closed_form(linear_extractor):
    LINEAR, _A = linear_extractor.name, linear_extractor.A
    mean_a, mean_b = [100.0, 120.0, 140.0, 90.0], [110.0, 115.0, 150.0, 95.0]
    cov_a = torch.tensor([[225.0, 60, 0, 0], [60, 200, 30, 0], [0, 30, 150, 20], [0, 0, 20, 180]])
    cov_b = torch.diag(torch.tensor([100.0, 250, 120, 300]))
    a, b = _gaussian_u8(20000, mean_a, cov_a, 1), _gaussian_u8(20000, mean_b, cov_b, 2)
    out = fidelity(a, b, features=LINEAR, kid=False, cache=False)
    assert set(out) == {f"FD-{LINEAR}"}
    fd = out[f"FD-{LINEAR}"]
    # Exact: the closed form on the empirical feature statistics (torch-fidelity's np.cov is unbiased).
    fa, fb = linear_extractor.features(a).numpy(), linear_extractor.features(b).numpy()
    emp = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fd == pytest.approx(emp, rel=1e-9)
    # Population: rounding to integers adds variance 1/12 per pixel (Sheppard's correction).
    at = _A.T
    pop = frechet_distance(at @ torch.tensor(mean_a, dtype=torch.float64),
                           at @ (cov_a.double() + torch.eye(4) / 12) @ _A,
                           at @ torch.tensor(mean_b, dtype=torch.float64),
                           at @ (cov_b.double() + torch.eye(4) / 12) @ _A)
    assert fd == pytest.approx(pop, rel=0.1)  # sampling sd of FD here is about 3% (5 seeds: -4%..+5%)


def test_kid_exact_when_subset_is_whole_set(linear_extractor):
    LINEAR = linear_extractor.name
    """With subset size N every KID subset is a permutation of the set, so the unbiased MMD^2 of a set
    against itself is exactly 2 (S - D) / (m (m - 1)) - 2 S / m^2 (S: kernel sum, D: its trace)."""
    a = _gaussian_u8(300, [100.0, 120.0, 140.0, 90.0], torch.eye(4) * 200, 3)
    out = fidelity(a, a, features=LINEAR, fid=False, kid_subset_size=10**6, kid_subsets=3, cache=False)
    f = linear_extractor.features(a)
    k = (f @ f.T / f.shape[1] + 1) ** 3  # torch-fidelity's default polynomial kernel
    m, s, d = f.shape[0], k.sum().item(), k.trace().item()
    expected = 2 * (s - d) / (m * (m - 1)) - 2 * s / m**2
    assert out[f"KID-{LINEAR}"] == pytest.approx(expected, rel=1e-8)
    assert abs(expected) < 1e-2 * abs(fidelity(a, _gaussian_u8(300, [90.0] * 4, torch.eye(4) * 200, 4),
                                               features=LINEAR, fid=False, cache=False)[f"KID-{LINEAR}"])


def test_digits_self_halves_noise(cache, digits_u8):
    u = digits_u8
    same = fidelity(u, u.clone(), features="digits", kid_subsets=10)
    assert set(same) == {"FD-digits", "KID-digits"}
    assert abs(same["FD-digits"]) < 1e-6
    noise = torch.randint(0, 256, u.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    far = fidelity(noise, u, features="digits", kid_subsets=10, cache=False)
    half = fidelity(u[:898], u[898:], features="digits", kid_subsets=10, cache=False)
    assert far["FD-digits"] > 5 and far["KID-digits"] > 0.2
    assert half["FD-digits"] < 0.1 * far["FD-digits"]
    assert abs(same["KID-digits"]) < 0.02 * far["KID-digits"]
    assert half["KID-digits"] < 0.1 * far["KID-digits"]
    # IS over 10 classes: high for real digits, low for noise; 50 samples clamp KID's subset size.
    is_u = fidelity(u[:500], u, features="digits", fid=False, kid=False, isc=True)["IS-digits"]
    assert 7 < is_u <= 10
    small = fidelity(u[:50], u, features="digits", kid_subsets=5, isc=True, prc=True, cache=False)
    assert set(small) == {"FD-digits", "KID-digits", "IS-digits", "precision-digits", "recall-digits"}
    assert all(np.isfinite(v) for v in small.values())


def test_digits_extractor_resizes_and_greys(cache, digits_u8):
    from fewstep.eval import digits_features as df

    df.register()
    df.register()  # idempotent
    fe = df.DigitsFeatureExtractor(df.NAME, ["64", "logits_unbiased", "logits"])
    u8 = digits_u8[:64]
    f8, lu, lg = fe(u8)
    assert f8.shape == (64, 64) and lu.shape == lg.shape == (64, 10)
    torch.testing.assert_close(lg - lu, fe.net.fc2.bias.expand(64, -1), rtol=0, atol=1e-5)
    up = u8.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # 32x32, nearest
    torch.testing.assert_close(fe(up)[0], f8, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fe(u8.expand(-1, 3, -1, -1))[0], f8, rtol=1e-4, atol=1e-4)
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target[:64])
    assert (lg.argmax(1) == labels).double().mean() > 0.9


def test_classifier_accuracy_and_cache_reuse(cache, monkeypatch):
    from fewstep.eval import digits_features as df

    monkeypatch.setenv("FEWSTEP_CACHE", str(cache["root"]))
    model = cache["model"]
    acc = df.digits_accuracy(model)
    assert acc > 0.97  # measured 0.992 (seed 0, 359 held-out images)
    assert model.heldout_accuracy == pytest.approx(acc)
    assert df.classifier_path().name == f"digits_classifier_v{df.DIGITS_VERSION}_seed0.safetensors"

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(df, "train_digits_classifier", boom)
    again = df.load_digits_classifier()
    assert again.heldout_accuracy == pytest.approx(acc, abs=1e-6)
    for p, q in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)


def test_reference_cache_reused(cache, digits_u8, tmp_path, monkeypatch):
    import torch_fidelity.utils as tfu

    from fewstep.eval import digits_features as df

    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    shutil.copy(cache["root"] / df.classifier_path().name, tmp_path / df.classifier_path().name)
    calls = []
    real = tfu.get_featuresdict_from_dataset
    monkeypatch.setattr(tfu, "get_featuresdict_from_dataset", lambda ds, *a: calls.append(len(ds)) or real(ds, *a))
    x, ref = digits_u8[:300], digits_u8[300:]
    first = fidelity(x, ref, features="digits", kid_subsets=5)
    files = sorted(p.name for p in (tmp_path / "fidelity").rglob("*.pt"))
    assert calls == [300, len(ref)] and any("features-64" in f for f in files) and any("stat-fid" in f for f in files)
    second = fidelity(x, ref.clone(), features="digits", kid_subsets=5)
    assert calls == [300, len(ref), 300]  # the reference was not encoded again
    assert second == first
    assert fidelity(x, ref, features="digits", kid=False) == {"FD-digits": first["FD-digits"]}
    calls.clear()
    fidelity(x, ref, features="digits", kid_subsets=5, cache=False)
    assert calls == [300, len(ref)]


def test_registered_reference_name(cache, digits_u8, tmp_path, monkeypatch):
    from torch_fidelity.registry import DATASETS_REGISTRY, register_dataset

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if "fewstep-test-digits" not in DATASETS_REGISTRY:
        register_dataset("fewstep-test-digits", lambda root, download: UInt8Images(digits_u8))
    out = fidelity(digits_u8, "fewstep-test-digits", features="digits", kid=False)
    assert abs(out["FD-digits"]) < 1e-6
    assert list((cache["root"] / "fidelity").rglob("fewstep-test-digits-*stat-fid*"))
    with pytest.raises(ConfigError, match="cifar10-train"):
        fidelity(digits_u8, "no-such-set", features="digits")


def test_inception_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("FEWSTEP_INCEPTION_WEIGHTS", raising=False)
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    with pytest.raises(ConfigError) as e:
        inception_weights()
    msg = str(e.value)
    assert "\n" not in msg and INCEPTION_FILE in msg and str(ckpt) in msg and "https://" in msg
    assert "FEWSTEP_INCEPTION_WEIGHTS" in msg and "weights" in msg and e.value.exit_code == 2
    with pytest.raises(ConfigError, match=INCEPTION_FILE):  # fails before any image is encoded
        fidelity(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    ckpt.mkdir(parents=True)
    (ckpt / INCEPTION_FILE).write_bytes(b"")
    assert inception_weights() == str(ckpt / INCEPTION_FILE)
    other = tmp_path / "mine.pth"
    other.write_bytes(b"")
    monkeypatch.setenv("FEWSTEP_INCEPTION_WEIGHTS", str(other))
    assert inception_weights() == str(other)
    explicit = tmp_path / "explicit.pth"
    with pytest.raises(ConfigError, match="explicit.pth"):
        inception_weights(explicit)
    explicit.write_bytes(b"")
    assert inception_weights(explicit) == str(explicit)
    # Precision/recall with Inception needs VGG16 weights: one line, not a download.
    monkeypatch.delenv("FEWSTEP_VGG16_WEIGHTS", raising=False)
    with pytest.raises(ConfigError, match="vgg16-397923af.pth") as e:
        fidelity(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
                 fid=False, kid=False, prc=True)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_cuda(cache, digits_u8):
    with pytest.raises(ConfigError, match="CUDA"):
        fidelity(digits_u8[:10], digits_u8[:10], features="digits", device="cuda")
