"""The restricted reader of EDM persistence pickles (fewstep/run/pickles.py): tensors, containers and module
records come back; code in the pickle never runs, and any global it names beyond data is refused."""
from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from fewstep.errors import CheckpointError
from fewstep.run.pickles import Persistent, Stub, load_persistence_pickle, state_dict
from fewstep.testing.fixtures import persistence_pickle

PRECOND = {"img_resolution": 8, "img_channels": 3, "label_dim": 0, "noise_schedule": "fm", "f_type": "simple_edm",
           "temb_type": "identity", "time_scale": 1000, "sigma_data": 0.5, "eps": 0.006, "T": 0.994}


class System:
    """Unpickles as os.system(command): what a malicious checkpoint does to a naive pickle.load."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_tensors_modules_and_records_come_back(tmp_path):
    state = {"a.weight": torch.randn(3, 2), "a.b.bias": torch.randn(3),
             "down.resample_filter": torch.full((1, 1, 2, 2), 0.25)}
    path = persistence_pickle(tmp_path / "m.pkl", state, model_class="SongUNet", model_kwargs={"x": 1}, precond=PRECOND)
    data = load_persistence_pickle(path)
    precond = data["ema"]
    assert isinstance(precond, Persistent) and precond.class_name == "IMMPrecond" and precond.source_chars > 0
    assert precond.state["f_type"] == "simple_edm" and precond.state["T"] == 0.994
    model = precond.state["_modules"]["model"]
    assert model.class_name == "SongUNet" and model.state["_init_kwargs"] == {"x": 1}
    assert isinstance(model.state["_modules"]["a"], Stub)  # a torch.nn.Module, recorded, not built
    assert model.state["_modules"]["a"].path == "torch.nn.modules.module.Module"
    got = state_dict(model)
    assert got.keys() == state.keys() and all(torch.equal(got[k], v) for k, v in state.items())


def test_numpy_scalars_dtypes_and_ordered_dicts_are_data(tmp_path):
    path = tmp_path / "d.pkl"
    value = {"s": np.float64(0.5) ** 0.5, "d": collections.OrderedDict(a=torch.float16), "t": torch.ones(2)}
    path.write_bytes(pickle.dumps(value, protocol=4))
    got = load_persistence_pickle(path)
    assert got["s"] == pytest.approx(0.5 ** 0.5) and got["d"]["a"] is torch.float16
    assert torch.equal(got["t"], torch.ones(2))


def test_a_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": System(f"touch {marker}")}, protocol=4))
    with pytest.raises(CheckpointError) as exc:
        load_persistence_pickle(path)
    assert str(exc.value).startswith(f"{path}: refused to load: the pickle names ")
    assert any(f"names {m}.system" in str(exc.value) for m in ("posix", "os", "nt"))
    assert not marker.exists()
    # the file is really malicious: a naive pickle.load (in another process) runs the command
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"], check=True)
    assert marker.exists()


def test_embedded_source_code_is_never_executed(tmp_path):
    """EDM's loader execs the module source a persistent object carries; this reader only measures it."""
    marker = tmp_path / "marker"
    src = f"open({str(marker)!r}, 'w').write('ran')\nclass SongUNet: pass\n"
    path = persistence_pickle(tmp_path / "m.pkl", {"w": torch.ones(1)}, model_class="SongUNet", model_kwargs={},
                              precond=PRECOND, module_src=src)
    data = load_persistence_pickle(path)
    assert data["ema"].source_chars == len(src) and not marker.exists()


@pytest.mark.parametrize("blob, expect", [
    (b"not a pickle at all", "not a readable checkpoint pickle"),
    (pickle.dumps({"x": torch.ones(3)})[:-20], "not a readable checkpoint pickle"),
    ("persistent id", "a persistent id in the pickle"),
    (pickle.dumps(eval, protocol=4), "names builtins.eval"),
])
def test_bad_files_are_one_line(tmp_path, blob, expect):
    path = tmp_path / "bad.pkl"
    if blob == "persistent id":  # what torch.save's storages use: a pickle that needs a persistent_load
        class WithIds(pickle.Pickler):
            def persistent_id(self, obj):
                return "storage-0" if obj == "x" else None

        with path.open("wb") as fh:
            WithIds(fh, protocol=4).dump({"a": "x"})
    else:
        path.write_bytes(blob)
    with pytest.raises(CheckpointError) as exc:
        load_persistence_pickle(path)
    assert str(exc.value).startswith(str(path)) and expect in str(exc.value) and "\n" not in str(exc.value)
