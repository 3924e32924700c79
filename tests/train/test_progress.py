"""fewstep.train.progress: plain status lines when stderr is not a terminal, nothing when disabled."""
from __future__ import annotations

import io
import re
import sys

from fewstep.train.progress import Progress


def test_plain_status_lines_without_a_terminal(capsys):
    bar = Progress(100, start=20, description="imm_toy")
    bar.advance(21)
    assert capsys.readouterr().err == ""  # advancing alone prints nothing without a bar
    bar.status(30, {"loss": 0.123456, "it/s": 41.98765})
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\[imm_toy\] step 30/100  loss 0\.1235  it/s 41\.99  \(\d+s, \d+:\d\d:\d\d left\)",
                        lines[0]), lines[0]


def test_eta_is_the_time_left_at_this_sessions_pace():
    from fewstep.train.progress import eta

    assert eta(10, 90, 5.0) == "0:00:45" and eta(100, 72000, 10.0) == "2:00:00" and eta(0, 10, 1.0) == "?"


def test_values_use_four_significant_digits(capsys):
    bar = Progress(10, description="train")
    bar.status(1, {"loss": 1.23456e-5, "big": 123456.0})
    line = capsys.readouterr().err
    assert "loss 1.235e-05" in line and "big 1.235e+05" in line


def test_disabled_prints_nothing(capsys):
    bar = Progress(10, enabled=False)
    bar.advance(3)
    bar.status(3, {"loss": 0.5})
    bar.close()
    assert capsys.readouterr() == ("", "")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_bar_instead_of_lines(monkeypatch):
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    bar = Progress(10, start=2, description="tty-run")
    assert bar._bar is not None
    bar.advance(5)
    bar.status(5, {"loss": 0.5})
    bar.close()
    bar.close()  # closing twice is harmless
    assert bar._bar is None
    assert "[tty-run] step" not in fake.getvalue()  # no plain status line


def test_a_disabled_progress_on_a_terminal_has_no_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert Progress(10, enabled=False)._bar is None
