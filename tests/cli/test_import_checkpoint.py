"""``fewstep import-checkpoint``: a checkpoint in the released format becomes a run that ``fewstep eval`` and
``fewstep sample`` accept; a malicious pickle is refused in one line, and what it would have done is not done."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from fewstep.networks import NetworkSpec
from fewstep.networks.ddpmpp import DDPMpp
from fewstep.testing.fixtures import image_folder, persistence_pickle

SONG = {"model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}
PRECOND = {"img_resolution": 8, "img_channels": 3, "label_dim": 0, "noise_schedule": "fm", "f_type": "simple_edm",
           "temb_type": "identity", "time_scale": 1000, "sigma_data": 0.5, "eps": 0.006, "T": 0.994}


def test_an_imported_checkpoint_evaluates_and_samples(tmp_path, cli):
    torch.manual_seed(0)
    net = DDPMpp(NetworkSpec((3, 8, 8), None, True), model_channels=16, channel_mult=(1, 2), num_blocks=1,
                 attn_resolutions=(4,), dropout=0.0)
    ckpt = persistence_pickle(tmp_path / "tiny.pkl", net.state_dict(), model_class="SongUNet", model_kwargs=SONG,
                              precond=PRECOND)
    images = image_folder(tmp_path / "images", size=(8, 8))
    run = tmp_path / "run"
    res = cli("import-checkpoint", ckpt, "--out", run, "--set", f"data.root={images}", "--set", "eval.n_samples=16",
              "--set", "eval.batch_size=16", "--set", "eval.steps=[1, 2]", "--set", "eval.metrics=[energy]")
    assert res.exit_code == 0, res.output
    assert Path(res.stdout.strip()) == run and (run / "recipe.yaml").is_file()
    res = cli("eval", run, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["steps"] for r in out["rows"]] == [1, 2] and out["checkpoint_step"] == 400_000
    res = cli("sample", run, "--steps", "1", "--n", "4", "--out", tmp_path / "s.png")
    assert res.exit_code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


class Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_malicious_pickle_is_refused_in_one_line_and_runs_nothing(tmp_path, cli):
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar10.pt"
    evil.write_bytes(pickle.dumps({"ema": Touch(marker)}, protocol=4))
    res = cli("import-checkpoint", evil, "--out", tmp_path / "run")
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"{evil}: refused to load: the pickle names ") and line.split(" names ")[1].split(",")[0] \
        .endswith(".system")
    assert not marker.exists() and not (tmp_path / "run").exists()
