"""``fewstep encode``: an image dataset through a (tiny, random) AutoencoderKL into latents that train and
decode; a VAE that cannot be loaded and a bad --set are one line."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from fewstep.data.latents import LatentDataset
from fewstep.testing.distributed import torchrun_env


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from fewstep.testing.fixtures import tiny_vae

    return tiny_vae(tmp_path_factory.mktemp("vae"))


def test_encode_cli_writes_latents_that_train_and_decode(vae_dir, tmp_path, cli):
    out = tmp_path / "lat"
    res = cli("encode", "--data", "digits", "--set", "data.size=16", "--vae", vae_dir, "--out", out, "--batch", 256)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["n"], meta["image_shape"], meta["latent_shape"]) == (1797, [1, 16, 16], [4, 8, 8])
    ds = LatentDataset(out, sigma_d=0.5, conditional=True)
    b = ds.sample(4096, torch.Generator().manual_seed(0))
    assert b.x.shape == (4096, 4, 8, 8) and b.cond.shape == (4096,) and ds.num_classes == 10
    per_channel = b.x.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=0.05)  # normalised per channel ...
    std = per_channel.std(1)
    assert torch.all((std > 0.45) & (std < 0.6))  # ... to about sigma_d (+ the posterior std)
    images = ds.to_uint8(b.x[:3])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 16, 16)


def test_a_vae_that_cannot_be_loaded_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = cli("encode", "--data", "digits", "--vae", tmp_path / "novae", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: vae '{tmp_path / 'novae'}' could not be loaded")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, expect", [
    ("data.size=12", "--set data.size: input should be 8, 16 or 32"),
    ("data.size=true", "--set data.size: expected a number, not the boolean true"),
    ("train.steps=3", "--set train.steps=3: takes data.<field>=value"),
])
def test_bad_data_flags_are_one_line(tmp_path, cli, flag, expect):
    res = cli("encode", "--data", "digits", "--set", flag, "--vae", tmp_path / "novae", "--out", tmp_path / "o")
    assert res.exit_code == 2 and expect in res.stderr.strip().splitlines()[0], res.stderr


def test_out_must_be_a_folder(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    res = cli("encode", "--data", "digits", "--vae", tmp_path / "novae", "--out", tmp_path / "file")
    assert res.exit_code == 2
    expect = f"error: --out {tmp_path / 'file'}: is a file; give a folder for the shards and meta.json"
    assert res.stderr.strip() == expect


def _torchrun_encode(root, vae_dir, out, **popen):
    env = torchrun_env()
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fewstep",
            "encode", "--data", "image_folder", "--set", f"data.root={root}", "--set", "data.size=16",
            "--set", "data.conditional=true", "--vae", str(vae_dir), "--out", str(out), "--shard-size", "4",
            "--workers", "0", "-q"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_two_processes_killed_and_resumed_encode_what_one_process_does(vae_dir, tmp_path, cli):
    """An image folder (some files broken) through 2 gloo processes, killed once 3 shards are written, then
    resumed, gives the latents of one uninterrupted process; a short DiT-S/2 run trains on them."""
    from safetensors import safe_open

    from fewstep.data.latentfiles import shard_path
    from fewstep.testing.fixtures import image_folder

    root = image_folder(tmp_path / "imgs", classes=4, per_class=100, size=(20, 18))
    (root / "class2" / "7.png").write_text("broken")
    two, one = tmp_path / "two", tmp_path / "one"
    proc = _torchrun_encode(root, vae_dir, two)
    deadline = time.monotonic() + 120
    while len(list((two / "shards").glob("*.safetensors"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "the encode wrote no shards"
        time.sleep(0.005)
    # every process of the encode (torchrun's workers outlive a killed torchrun), as a lost node would be
    subprocess.run(["pkill", "-KILL", "-f", f"{two} --shard-size"], check=False)
    proc.communicate()
    written = len(list((two / "shards").glob("*.safetensors")))
    assert 3 <= written < 100 and not (two / "meta.json").exists(), written  # killed mid-way
    resumed = _torchrun_encode(root, vae_dir, two)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    assert not list((two / "shards").glob(".*.tmp"))  # what the kill left half-written is gone
    assert stdout.strip() == str(two)  # rank 0 alone prints the folder
    assert "skipped 1 of 400 images that could not be read: class2/7.png" in stderr
    res = cli("encode", "--data", "image_folder", "--set", f"data.root={root}", "--set", "data.size=16",
              "--set", "data.conditional=true", "--vae", vae_dir, "--out", one, "--shard-size", "4", "--workers", "2",
              "-q")
    assert res.exit_code == 0, res.output
    for k in range(100):
        a, b = safe_open(str(shard_path(two, k)), "pt"), safe_open(str(shard_path(one, k)), "pt")
        assert a.metadata() == b.metadata() and all(torch.equal(a.get_tensor(n), b.get_tensor(n)) for n in a.keys())
    meta = json.loads((two / "meta.json").read_text())
    assert meta == json.loads((one / "meta.json").read_text()) and (meta["n"], meta["classes"]) == (399, 4)

    from fewstep.api import train_recipe

    recipe = tmp_path / "dit.yaml"
    recipe.write_text(f"""\
data: {{name: latents, root: {two}, conditional: true}}
network: {{name: dit, size: S, patch: 2}}
interpolant: {{name: ot_fm, eps: 0.0}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: imm, group_size: 2, k: 12, b: 4, label_dropout: 0.1}}
train: {{steps: 2, batch_size: 4, optimizer: adamw, log_every: 1, checkpoint_every: 2}}
eval: {{steps: [1], reference_steps: null, n_samples: 4, metrics: [energy]}}
output: {{dir: {tmp_path / 'runs'}}}
""")
    run = train_recipe(recipe, progress=False)
    records = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
