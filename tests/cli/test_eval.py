"""``fewstep eval RUN``: flags, a missing run, the table and --json."""
from __future__ import annotations


def test_bad_flag_value_is_a_usage_error(tiny, cli):
    res = cli("eval", tiny.parent, "--steps", "1,x")
    assert res.exit_code == 2 and "comma-separated step counts" in res.stderr


def test_eval_of_a_missing_run_is_clean(tmp_path, cli):
    res = cli("eval", tmp_path)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "not a run directory" in res.stderr
