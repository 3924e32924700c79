"""fewstep.run.records: metrics.jsonl appended, read back (skipping a truncated last line) and trimmed."""
from __future__ import annotations

import json

from fewstep.run.records import METRICS, append_metrics, read_metrics, trim_metrics


def test_no_file_means_no_records(tmp_path):
    assert read_metrics(tmp_path) == []
    trim_metrics(tmp_path, 10)
    assert not (tmp_path / METRICS).exists()  # trimming creates nothing


def test_append_then_read_in_order(tmp_path):
    recs = [{"step": 10, "loss": 0.5, "lr": 1e-3}, {"step": 20, "loss": 0.25, "mmd2": 1e-5}]
    for r in recs:
        append_metrics(tmp_path, r)
    assert read_metrics(str(tmp_path)) == recs
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(line) for line in lines] == recs  # one JSON object per line


def test_a_truncated_last_line_and_lines_without_a_step_are_skipped(tmp_path):
    text = ('{"step": 10, "loss": 0.5}\n'
            '\n'
            '[1, 2]\n'
            '{"loss": 0.4}\n'
            '{"step": 20, "loss": 0.3}\n'
            '{"step": 30, "lo')  # a crash while appending
    (tmp_path / METRICS).write_text(text)
    assert read_metrics(tmp_path) == [{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.3}]


def test_a_stray_byte_does_not_stop_the_reading(tmp_path):
    (tmp_path / METRICS).write_bytes(b'{"step": 1, "loss": 1.0}\n\xff\xfe\n{"step": 2, "loss": 0.5}\n')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_appending_after_a_truncated_line_keeps_the_new_record_readable(tmp_path):
    (tmp_path / METRICS).write_text('{"step": 10}\n{"step": 2')
    trim_metrics(tmp_path, 10)  # what a resumed run does first
    append_metrics(tmp_path, {"step": 20})
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]


def test_trim_drops_records_after_the_step(tmp_path):
    for step in (10, 20, 30, 40):
        append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    trim_metrics(tmp_path, 20)
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]
    assert (tmp_path / METRICS).read_text().endswith("}\n")
    trim_metrics(tmp_path, 0)
    assert read_metrics(tmp_path) == [] and (tmp_path / METRICS).read_text() == ""
