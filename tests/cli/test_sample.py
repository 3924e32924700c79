"""``fewstep sample RUN``: samplers by name, where the PNG goes."""
from __future__ import annotations


def test_unknown_sampler_flag(tiny, cli):
    assert cli("train", tiny, "--quiet").exit_code == 0
    res = cli("sample", tiny.parent / "runs" / "tiny", "--sampler", "eular")
    assert res.exit_code == 2 and "did you mean 'euler'" in res.stderr


def test_sample_out_must_be_a_file_name(tiny, tmp_path, cli):
    assert cli("train", tiny, "-q").exit_code == 0
    res = cli("sample", tmp_path / "runs" / "tiny", "--out", tmp_path)
    assert res.exit_code == 2
    expect = f"error: --out {tmp_path}: is a folder; give a file name such as {tmp_path / 'samples.png'}"
    assert res.output.strip() == expect


def test_sample_saves_the_samples_and_never_overwrites_a_sheet_unless_asked(tmp_path, write, cli):
    import numpy as np
    from PIL import Image

    recipe = write("digits.yaml", """\
data: {name: digits}
network: {name: mlp, width: 32, depth: 2, emb_dim: 16}
flowmap: {parameterisation: euler_fm}
objective: {name: fm}
train: {steps: 4, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 4, threads: 1}
eval: {steps: [1], reference_steps: null, n_samples: 32, metrics: [energy]}
output: {dir: %s}
""" % (tmp_path / "runs"))
    run = cli("train", recipe, "-q").stdout.strip()
    first = cli("sample", run, "--steps", "1,2", "--n", "300", "--save-npz", tmp_path / "s.npz",
                "--save-png", tmp_path / "png")
    assert first.exit_code == 0, first.output
    sheet = first.stdout.strip()
    assert sheet.endswith("samples/sample_step_0000004.png")
    with np.load(tmp_path / "s.npz") as data:
        assert data["steps_1"].shape == (300, 8, 8, 1) and data["steps_1"].dtype == np.uint8
    assert len(list((tmp_path / "png" / "2step").glob("*.png"))) == 300
    second = cli("sample", run, "--steps", "1")
    assert second.stdout.strip().endswith("sample_step_0000004-2.png")
    with Image.open(sheet) as im:
        assert im.format == "PNG"
    forced = cli("sample", run, "--steps", "1", "--force")
    assert forced.stdout.strip() == sheet
