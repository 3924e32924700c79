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
