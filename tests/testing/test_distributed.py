"""fewstep/testing/distributed.py: the torchrun-free environment, and the step comparison failing on each
kind of mismatch."""
from __future__ import annotations

import json

import pytest

from fewstep.testing.distributed import TORCHRUN_VARS, assert_same_steps, torchrun_env


def test_torchrun_env_drops_the_worker_variables(monkeypatch):
    for k in TORCHRUN_VARS:
        monkeypatch.setenv(k, "1")
    monkeypatch.setenv("KEEP_ME", "x")
    env = torchrun_env(OMP_NUM_THREADS="1")
    assert not set(TORCHRUN_VARS) & set(env) and env["KEEP_ME"] == "x" and env["OMP_NUM_THREADS"] == "1"


def _run(tmp_path, name, recs):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_assert_same_steps_passes_on_equal_records_and_fails_on_each_mismatch(tmp_path):
    base = [{"step": s, "loss": 1.0, "grad_norm": 2.0, "rank_checksums": [3.0, 3.0]} for s in (2, 4)]
    one = _run(tmp_path, "one", [{k: v for k, v in r.items() if k != "rank_checksums"} for r in base])
    assert_same_steps(_run(tmp_path, "two", base), one, [2, 4])
    for i, change in enumerate([{"loss": 1.00001}, {"grad_norm": 2.001}, {"rank_checksums": [3.0, 3.1]},
                                {"rank_checksums": [3.0]}, {"step": 3}]):
        bad = [dict(base[0]), {**base[1], **change}]
        with pytest.raises(AssertionError):
            assert_same_steps(_run(tmp_path, f"bad{i}", bad), one, [2, 4])
