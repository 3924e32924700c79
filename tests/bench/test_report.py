"""Bench reports (fewstep/bench/report.py): checks evaluated per data set, the markdown and CSV tables."""
from __future__ import annotations

import pytest

from fewstep.bench.report import csv_text, markdown, run_checks
from fewstep.bench.spec import parse_check


def test_checks_parse_and_evaluate_on_each_data_set():
    c = parse_check("sw2: imm@1 <= 0.25 * fm@1", ["fm", "imm"])
    assert (c.metric, c.lhs, c.op, c.factor, c.rhs) == ("sw2", ("imm", 1), "<=", 0.25, ("fm", 1))
    results = {"data": ["a", "b"], "summary": [
        {"data": "a", "entry": "fm", "steps": 1, "sw2": 1.0}, {"data": "a", "entry": "imm", "steps": 1, "sw2": 0.2},
        {"data": "b", "entry": "fm", "steps": 1, "sw2": 1.0}, {"data": "b", "entry": "imm", "steps": 1, "sw2": 0.3}]}
    assert [r["ok"] for r in run_checks(results, [c])] == [True, False]
    for bad, why in (("sw2 imm@1 <= fm@1", "expected"), ("sw2: xx@1 <= fm@1", "unknown entry 'xx'")):
        with pytest.raises(ValueError, match=why):
            parse_check(bad, ["fm", "imm"])


def test_a_check_can_name_the_data_sets_it_applies_to():
    c = parse_check("sw2[b, c]: imm@1 <= fm@1", ["fm", "imm"], ["a", "b", "c"])
    assert c.data == ("b", "c")
    results = {"data": ["a", "b"], "summary": [
        {"data": d, "entry": e, "steps": 1, "sw2": v} for d, e, v in
        (("a", "fm", 1.0), ("a", "imm", 2.0), ("b", "fm", 1.0), ("b", "imm", 0.5))]}
    assert [(r["data"], r["ok"]) for r in run_checks(results, [c])] == [("b", True)]  # a's failure not judged
    with pytest.raises(ValueError, match="unknown data set 'd'"):
        parse_check("sw2[d]: imm@1 <= fm@1", ["fm", "imm"], ["a", "b"])


def _results():
    """Two entries on one data set, one metric, two step counts; 'b' measured at 1 step only."""
    rec = {"data": "moons", "n": 2, "nfe": 1, "samples_per_s": 1000.0, "train_seconds_per_step": 0.002,
           "reference": False}
    summary = [{**rec, "entry": "a", "label": "A", "steps": 1, "energy": 0.5, "energy_std": 0.1, "energy_floor": 0.01},
               {**rec, "entry": "a", "label": "A", "steps": 2, "nfe": 2, "energy": 0.25, "energy_std": 0.0,
                "energy_floor": 0.01},
               {**rec, "entry": "b", "label": "B", "steps": 1, "energy": 0.125, "energy_std": 0.05,
                "energy_floor": 0.01}]
    runs = [{"seed": 0, "evals": [{"eval_seed": 0}, {"eval_seed": 1}]}]
    return {"bench": "t", "file": "t.yaml", "created": "now", "entries": {"a": "A", "b": "B"}, "data": ["moons"],
            "runs": runs, "summary": summary}


def test_markdown_has_a_row_per_entry_a_column_per_step_count_and_the_floor():
    md = markdown(_results())
    assert "| energy | 1 step | 2 steps |" in md
    assert "| A | 0.5 ± 0.1 | 0.25 |" in md  # a zero std is not printed
    assert "| B | 0.125 ± 0.05 | – |" in md  # not measured at 2 steps
    assert "| data vs data (floor) | 0.01 |" in md
    assert "| A | 2.0 | 1000 |" in md  # train ms/step, samples/s at 1 step


def test_csv_has_mean_std_and_floor_columns_per_metric():
    lines = csv_text(_results()).splitlines()
    assert lines[0] == ("data,entry,label,steps,nfe,n,energy,energy_std,energy_floor,samples_per_s,"
                        "train_seconds_per_step")
    assert lines[1] == "moons,a,A,1,1,2,0.5,0.1,0.01,1000.0,0.002" and len(lines) == 4


def test_a_check_on_an_unmeasured_step_count_is_reported_not_judged():
    results = _results()
    [check] = run_checks(results, [parse_check("energy: b@2 <= a@1", ["a", "b"])])
    assert check["ok"] is None and check["why"] == "not measured"
    [check] = run_checks(results, [parse_check("energy: b@1 <= 0.25 * a@1", ["a", "b"])])
    assert check["ok"] is True and (check["lhs"], check["rhs"]) == (0.125, 0.125)
