"""``fewstep eval RUN``: flags, a missing run, the table and --json."""
from __future__ import annotations


def test_bad_flag_value_is_a_usage_error(tiny, cli):
    res = cli("eval", tiny.parent, "--steps", "1,x")
    assert res.exit_code == 2 and "comma-separated step counts" in res.stderr


def test_eval_of_a_missing_run_is_clean(tmp_path, cli):
    res = cli("eval", tmp_path)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "not a run directory" in res.stderr


def test_eval_takes_sampler_and_eval_settings_a_checkpoint_and_the_weights(tiny, tmp_path, cli):
    import json

    run = cli("train", tiny, "-q").stdout.strip()  # 30 steps, checkpoints at 30 only
    res = cli("eval", run, "--json", "--steps", "1", "--set", "sampler.name=heun", "--set", "eval.n_samples=32",
              "--weights", "online", "--checkpoint", "30")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["sampler"], out["n_samples"], out["weights"], out["checkpoint_step"]) == ("heun", 32, "online", 30)
    assert out["overrides"] == ["sampler.name=heun", "eval.n_samples=32"] and out["rows"][0]["nfe"] == 2
    bad = cli("eval", run, "--set", "network.width=8")
    assert bad.exit_code == 2 and bad.stderr.strip().startswith("error: --set network.width=8: after training only")
    missing = cli("eval", run, "--checkpoint", "7")
    assert missing.exit_code == 2 and "no checkpoint at step 7 (kept: 30;" in missing.stderr
