"""fewstep.builtin.metrics: a metric's stored reference statistics that are not there are named (for
``fewstep check``); a reference that is a data set name or `data` names no file."""
from __future__ import annotations

import pytest

from fewstep.builtin.metrics import FDDigitsConfig, FIDConfig


@pytest.mark.parametrize(("cls", "name", "flags"), [(FIDConfig, "fid", ""),
                                                    (FDDigitsConfig, "fd_digits", " --features digits")])
def test_a_missing_reference_file_is_named_with_the_command_that_makes_it(tmp_path, cls, name, flags):
    for suffix in (".npz", ".pkl"):
        ref = tmp_path / f"ref{suffix}"
        [(where, message)] = cls(reference=str(ref)).resources()
        assert where == ("eval", "metrics", name, "reference")
        assert message == f"{ref} does not exist yet; make it with `fewstep fid-ref IMAGES{flags} --out {ref}`"
        ref.write_bytes(b"")
        assert cls(reference=str(ref)).resources() == []


@pytest.mark.parametrize(("cls", "name"), [(FIDConfig, "fid"), (FDDigitsConfig, "fd_digits")])
def test_a_reference_that_is_not_a_statistics_file_names_nothing(cls, name):
    assert cls().resources() == []
