"""Data at scale: encode throughput, memory-mapped latent reads against in-memory ones, and the
resident memory of processes sharing one latent file.

(a) ``fewstep encode``'s loop (fewstep.data.encode.encode_source) over a generated folder of JPEGs through
    the tiny random AutoencoderKL of the tests, with 0, 1 and 2 DataLoader workers: images/s (wall).
(b) Random batches of 256 from an encoded folder of 4 x 32 x 32 latents (ImageNet-256's shape), as
    training draws them (LatentDataset.sample: gather mean and std rows, noise, normalise), against the
    same tensors held in memory and gathered the same way: samples/s, for the gather alone and for the
    whole draw. "Cold": the file's pages are dropped from the page cache first (posix_fadvise
    DONTNEED), as for a file larger than the page cache one can spare; "warm": after a full read.
(c) Two processes drawing from one file: RssAnon (private), RssFile (mapped file pages) and Pss
    (proportional share) of each, from /proc/<pid>/smaps_rollup, against the file's size.

    .venv/bin/python bench/data_io.py                 # ~3 min on 2 cores, a 2 GiB file in /tmp
    .venv/bin/python bench/data_io.py --file-gib 8    # a larger file
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def encode_throughput(tmp: Path, n_images: int, workers_list: list[int]) -> dict[int, float]:
    from PIL import Image

    from fewstep.data.encode import encode_source
    from fewstep.data.imagefiles import ImageFiles, list_images
    from fewstep.data.vae import load_vae
    from fewstep.testing.fixtures import tiny_vae

    rng = np.random.default_rng(0)
    folder = tmp / "images"
    for i in range(n_images):
        (folder / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / f"c{i % 10}" / f"{i}.jpg",
                                                                                  quality=90)
    vae = load_vae(str(tiny_vae(tmp / "vae")))
    source = ImageFiles(list_images(folder), 64)  # ADM crop of 400 x 300 JPEGs to 64 (the tiny VAE is small)
    plan = {"source": "bench", "vae": "tiny", "image_shape": [3, 64, 64], "labels": True, "classes": 10}
    out = {}
    for workers in workers_list:
        t0 = time.perf_counter()
        encode_source(source, vae, tmp / f"enc{workers}", plan=plan, shard_size=256, batch_size=64, workers=workers)
        out[workers] = n_images / (time.perf_counter() - t0)
    return out


def write_latent_folder(folder: Path, n: int, shard: int = 16384) -> int:
    from fewstep.data.latentfiles import PLAN, finalise, shard_path, shard_sums, write_shard
    from fewstep.files import write_json

    g = torch.Generator().manual_seed(0)
    for k, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        mean = (2 * torch.randn(m, 4, 32, 32, generator=g)).half()
        std = (0.1 + torch.rand(m, 4, 32, 32, generator=g)).half()
        write_shard(shard_path(folder, k), {"index": torch.arange(start, start + m), "mean": mean, "std": std,
                                            "labels": torch.randint(0, 1000, (m,), generator=g)},
                    {"sums": shard_sums(mean, std), "skipped": []})
    plan = {"source": "bench", "vae": "none", "image_shape": [3, 256, 256], "labels": True, "classes": 1000,
            "n": n, "shard_size": shard, "xflip": False, "format": 2}
    write_json(folder / PLAN, plan)
    finalise(folder, plan)
    return sum(p.stat().st_size for p in (folder / "shards").iterdir())


def drop_cache(folder: Path) -> None:
    for path in (folder / "shards").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


_COLD = """
import sys, time, torch
from fewstep.data.latents import LatentDataset
torch.set_num_threads(1)
ds = LatentDataset(sys.argv[1], conditional=True)
gen = torch.Generator().manual_seed(1)
n, batches = len(ds), int(sys.argv[3])
t0 = time.perf_counter()
for _ in range(batches):
    if sys.argv[2] == "gather":
        idx = torch.randint(0, n, (256,), generator=gen).numpy()
        ds.files.rows("mean", idx), ds.files.rows("std", idx)
    else:
        ds.sample(256, gen)
print(batches * 256 / (time.perf_counter() - t0))
"""


def read_throughput(folder: Path, batches: int) -> dict[str, float]:
    """Samples/s of random batches of 256. The cold figures come from a fresh process after the file's
    pages are dropped (pages a process still maps would stay cached); the warm ones after a full read."""
    from fewstep.data.latents import LatentDataset

    out = {}
    for what in ("gather", "draw"):
        drop_cache(folder)
        run = subprocess.run([sys.executable, "-c", _COLD, str(folder), what, str(batches)], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        out[f"mmap {what}, cold"] = float(run.stdout.strip())
    for path in (folder / "shards").iterdir():  # read the whole file once: every page cached
        path.read_bytes()
    ds = LatentDataset(folder, sigma_d=0.5, conditional=True)
    n = len(ds)

    def rate(fn) -> float:
        gen = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for _ in range(batches):
            fn(gen)
        return batches * 256 / (time.perf_counter() - t0)

    def gather_mmap(gen):
        idx = torch.randint(0, n, (256,), generator=gen).numpy()
        ds.files.rows("mean", idx), ds.files.rows("std", idx)

    out["mmap gather, warm"] = rate(gather_mmap)
    out["mmap draw, warm"] = rate(lambda gen: ds.sample(256, gen))

    held_mean = torch.cat([torch.from_numpy(np.array(a)) for a in ds.files.arrays["mean"]])
    held_std = torch.cat([torch.from_numpy(np.array(a)) for a in ds.files.arrays["std"]])
    labels = ds.labels

    def gather_held(gen):
        idx = torch.randint(0, n, (256,), generator=gen)
        held_mean[idx], held_std[idx]

    def draw_held(gen):  # LatentDataset.sample on tensors held in memory
        idx = torch.randint(0, n, (256,), generator=gen)
        z = held_mean[idx].float() + held_std[idx].float() * torch.randn(256, 4, 32, 32, generator=gen)
        return (z - ds.mu) / ds.sd * ds.sigma_d, labels[idx]

    out["in-memory gather"] = rate(gather_held)
    out["in-memory draw"] = rate(draw_held)
    return out


_READER = """
import re, sys, time, torch
from fewstep.data.latents import LatentDataset
def memory():
    text = open("/proc/self/smaps_rollup").read()
    out = {k: int(re.search(k + r":\\s+(\\d+) kB", text).group(1)) for k in ("Rss", "Pss", "Anonymous")}
    out["RssFile"] = int(re.search(r"RssFile:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    return out
before = memory()
ds = LatentDataset(sys.argv[1], conditional=True)
gen = torch.Generator().manual_seed(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    ds.sample(256, gen)
after = memory()
print({k: after[k] - before[k] for k in after}, flush=True)
time.sleep(float(sys.argv[4]))
"""


def shared_memory(folder: Path, batches: int) -> list[dict[str, float]]:
    """Two readers at once; each reports what opening the file and ``batches`` draws added to its memory
    (kB, past the imports), then waits, so that both map the file when they measure."""
    procs = [subprocess.Popen([sys.executable, "-c", _READER, str(folder), str(seed), str(batches), "5"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for seed in (0, 1)]
    out = []
    for p in procs:
        rec = ast.literal_eval(p.stdout.readline())
        p.wait()
        out.append({"Rss MiB": rec["Rss"] / 1024, "Pss MiB": rec["Pss"] / 1024,
                    "RssAnon MiB": rec["Anonymous"] / 1024, "RssFile MiB": rec["RssFile"] / 1024})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file-gib", type=float, default=2.0, help="size of the latent file (default 2 GiB)")
    p.add_argument("--images", type=int, default=512, help="images for the encode throughput (default 512)")
    p.add_argument("--batches", type=int, default=100, help="random batches of 256 per read figure (default 100)")
    p.add_argument("--dir", default=None, help="where the files go (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 torch thread")
        enc = encode_throughput(tmp, args.images, [0, 1, 2])
        print("(a) encode, tiny VAE, 400x300 JPEG -> ADM crop 64:",
              ", ".join(f"{w} workers {r:.0f} images/s" for w, r in enc.items()))
        n = int(args.file_gib * 2**30 / (2 * 4 * 32 * 32 * 2))
        size = write_latent_folder(tmp / "latents", n)
        shards = len(list((tmp / "latents" / "shards").iterdir()))
        print(f"(b) {n} latents 4x32x32 (mean + std, float16): {size / 2**30:.2f} GiB in {shards} shards")
        reads = read_throughput(tmp / "latents", args.batches)
        for name, r in reads.items():
            print(f"    {name:20s} {r:10.0f} samples/s")
        print(f"    mmap / in-memory, draw: cold {reads['mmap draw, cold'] / reads['in-memory draw']:.2f}, "
              f"warm {reads['mmap draw, warm'] / reads['in-memory draw']:.2f}; gather: cold "
              f"{reads['mmap gather, cold'] / reads['in-memory gather']:.2f}, warm "
              f"{reads['mmap gather, warm'] / reads['in-memory gather']:.2f}")
        mem = shared_memory(tmp / "latents", args.batches)
        for i, m in enumerate(mem):
            print(f"(c) reader {i}, added by the data: " + ", ".join(f"{k} {v:.0f}" for k, v in m.items())
                  + f"  (file {size / 2**20:.0f} MiB; private {m['RssAnon MiB'] / (size / 2**20):.1%} of it)")
        print(json.dumps({"encode_images_per_s": enc, "reads_samples_per_s": reads, "memory": mem,
                          "file_bytes": size}))


if __name__ == "__main__":
    main()
