"""Encoded latents on disk (fewstep/data/latentfiles.py): rows gathered from memory-mapped shards equal the
tensors written, the channel statistics merge over shards as a direct computation gives them, a broken
shard is one line, and a process that reads a file holds far less private memory than the file."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fewstep.data.latentfiles import LatentFiles, channel_statistics, shard_path, shard_sums, write_latents, write_shard
from fewstep.errors import ConfigError, MissingResource


def _shards(folder, sizes, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    means, stds, labs = [], [], []
    start = 0
    for k, m in enumerate(sizes):
        mean = torch.randn(m, 4, 3, 3, generator=g).half()
        std = torch.rand(m, 4, 3, 3, generator=g).half()
        lab = torch.randint(0, 10, (m,), generator=g)
        tensors = {"index": torch.arange(start, start + m), "mean": mean, "std": std}
        if labels:
            tensors["labels"] = lab
        write_shard(shard_path(folder, k), tensors, {"sums": shard_sums(mean, std), "skipped": []})
        means.append(mean), stds.append(std), labs.append(lab)
        start += m
    (folder / "meta.json").write_text("{}")
    return torch.cat(means), torch.cat(stds), torch.cat(labs)


def test_rows_gathered_across_shards_equal_the_tensors_written(tmp_path):
    mean, std, labels = _shards(tmp_path, [5, 0, 7, 3])  # an empty shard (every image unreadable) included
    files = LatentFiles(tmp_path)
    assert len(files) == 15 and files.shape == (4, 3, 3) and torch.equal(files.labels, labels)
    idx = torch.tensor([14, 0, 5, 5, 11, 4, 12, 0])  # unsorted, repeated, shard edges
    assert torch.equal(files.rows("mean", idx.numpy()), mean[idx])
    assert torch.equal(files.rows("std", idx.numpy()), std[idx])
    assert "mean" in files and "mean_flip" not in files


def test_a_folder_of_fewstep_0_1_reads_as_one_shard(tmp_path):
    from safetensors.torch import save_file

    mean, std = torch.randn(6, 4, 2, 2).half(), torch.rand(6, 4, 2, 2).half()
    save_file({"mean": mean, "std": std}, str(tmp_path / "latents.safetensors"))
    (tmp_path / "meta.json").write_text("{}")
    files = LatentFiles(tmp_path)
    assert len(files) == 6 and files.labels is None
    assert torch.equal(files.rows("mean", [5, 1]), mean[[5, 1]])


def test_channel_statistics_merged_over_shards_equal_a_direct_computation(tmp_path):
    """E z = E mean and Var z = Var(mean) + E std^2 per channel for z = mean + std e, over images and positions."""
    mean, std, _ = _shards(tmp_path, [9, 4, 6], seed=3)
    files = LatentFiles(tmp_path)
    headers = [json.loads(files.paths[k].read_bytes()[8:8 + int.from_bytes(files.paths[k].read_bytes()[:8],
                                                                             "little")])
               for k in range(3)]
    sums = [json.loads(h["__metadata__"]["sums"]) for h in headers]
    mu, sd = channel_statistics(sums)
    m, s = mean.double().transpose(0, 1).flatten(1), std.double().transpose(0, 1).flatten(1)
    assert mu == pytest.approx(m.mean(1).tolist(), rel=1e-12)
    assert sd == pytest.approx((m.var(1, unbiased=False) + (s * s).mean(1)).sqrt().tolist(), rel=1e-12)
    # ... and a large sample of z drawn from them has those moments
    z = (mean.float() + std.float() * torch.randn(2000, *mean.shape, generator=torch.Generator().manual_seed(0)))
    zc = z.permute(2, 0, 1, 3, 4).flatten(1)  # [channel, draws x images x positions]
    assert zc.std(1).tolist() == pytest.approx(sd, rel=0.02)


def test_write_latents_stores_one_shard_with_plan_and_meta(tmp_path):
    mean, std = torch.randn(5, 4, 2, 2).half(), torch.rand(5, 4, 2, 2).half()
    write_latents(tmp_path, mean, std, torch.tensor([0, 2, 1, 2, 0]), "vae-id", (3, 4, 4), "test")
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["n"], meta["latent_shape"], meta["classes"], meta["skipped"]) == (5, [4, 2, 2], 3, 0)
    assert json.loads((tmp_path / "plan.json").read_text())["labels"] is True
    assert torch.equal(LatentFiles(tmp_path).rows("mean", [0, 4]), mean[[0, 4]])


def test_missing_and_broken_shards_are_one_line(tmp_path):
    with pytest.raises(MissingResource, match="holds no encoded latents .*fewstep encode"):
        LatentFiles(tmp_path)
    _shards(tmp_path, [4, 4])
    path = shard_path(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match=r"00001.safetensors: tensor .* does not fit the file \(truncated\?\)"):
        LatentFiles(tmp_path)
    path.write_bytes(b"\x05")
    with pytest.raises(ConfigError, match="00001.safetensors: not a readable safetensors file"):
        LatentFiles(tmp_path)
    _shards(tmp_path, [4])
    write_shard(shard_path(tmp_path, 1), {"index": torch.arange(2), "mean": torch.zeros(2, 4, 3, 3).half(),
                                          "std": torch.ones(2, 4, 3, 3).half()}, {"sums": {}, "skipped": []})
    with pytest.raises(ConfigError, match="tensor labels is in some shards and not in others"):
        LatentFiles(tmp_path)


_RSS = """
import re, sys, numpy as np
from safetensors.torch import load_file
from fewstep.data.latentfiles import LatentFiles
def anon():
    return int(re.search(r"RssAnon:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
before = anon()
if sys.argv[2] == "mmap":
    files = LatentFiles(sys.argv[1])
    rng = np.random.default_rng(0)
    for _ in range(40):
        idx = rng.integers(0, len(files), 256)
        files.rows("mean", idx), files.rows("std", idx)
    keep = files
else:  # held in memory (safetensors 0.8's load_file maps the file itself: the copy is what holding means)
    keep = {k: v.clone() for k, v in load_file(sys.argv[1] + "/shards/00000.safetensors").items()}
print(anon() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_reading_a_file_holds_little_private_memory_unlike_loading_it(tmp_path):
    """64 MiB of latents: 40 random batches of 256 through the memory maps add well under 10% of the file to
    the process's private (anonymous) memory; holding the file's tensors in memory adds all of it."""
    n = 4096
    mean, std = torch.randn(n, 4, 32, 32).half(), torch.rand(n, 4, 32, 32).half()
    write_latents(tmp_path, mean, std, torch.zeros(n, dtype=torch.long), "vae", (3, 256, 256), "test")
    size = shard_path(tmp_path, 0).stat().st_size
    assert size > 64 * 2**20

    def private(mode):
        out = subprocess.run([sys.executable, "-c", _RSS, str(tmp_path), mode], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip())

    mapped, loaded = private("mmap"), private("load")
    assert mapped < 0.1 * size, (mapped, size)
    assert loaded > 0.8 * size, (loaded, size)  # the measurement sees a file that is held
