"""A toy run with the wandb logger in offline mode (no network): the offline run folder holds metrics.jsonl's
scalars, the grids and the recipe; a resumed run and a later ``fewstep eval`` continue the same W&B run id."""
from __future__ import annotations

import json

import pytest

from fewstep.api import evaluate_run, train_recipe
from fewstep.run.records import read_metrics

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")

RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 16, depth: 1, emb_dim: 8}
flowmap: {parameterisation: euler_fm}
objective: {name: fm}
train: {steps: 6, batch_size: 32, optimizer: adam, lr: 1e-3, log_every: 2, checkpoint_every: 3, sample_every: 3,
        loggers: [jsonl, {name: wandb, mode: offline, tags: [toy]}]}
eval: {steps: [1, 2], reference_steps: null, n_samples: 64, metrics: [energy]}
"""
BLOCK, HEADER = 32768, 7  # the .wandb file: LevelDB's log format after a 7-byte ":W&B" header


def records(path) -> list:
    """The protobuf records of a .wandb file, read independently of the wandb client: 32 KiB blocks of
    chunks, each with a 7-byte header (checksum, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)."""
    raw, out, part, pos = path.read_bytes(), [], b"", HEADER
    assert raw[:4] == b":W&B"
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        if left < HEADER or (length == 0 and kind == 0):  # the block's zero padding
            pos += left
            continue
        part += raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(part)
            out.append(rec)
            part = b""
    return out


def _sessions(run):
    return sorted((run / "wandb").glob("offline-run-*"))


def _history(run) -> list[dict]:
    rows = []
    for folder in _sessions(run):
        for rec in records(next(folder.glob("run-*.wandb"))):
            if rec.WhichOneof("record_type") == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in _history(run) if "train/loss" in r}


def test_offline_run_holds_the_scalars_grids_and_recipe(write, tmp_path, regs):
    run = tmp_path / "run"
    train_recipe(write("wb.yaml", RECIPE), run_dir=run, registries=regs, progress=False)
    expect = {r["step"]: r["loss"] for r in read_metrics(run)}
    assert _losses(run) == pytest.approx(expect, rel=1e-6)
    grids = [r for r in _history(run) if r.get("samples/_type") == "image-file"]
    assert [r["step"] for r in grids] == [3, 6]
    (folder,) = _sessions(run)
    assert all((folder / "files" / r["samples/path"]).is_file() for r in grids)  # the PNGs, for `wandb sync`
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert run_id in folder.name
    recs = records(folder / f"run-{run_id}.wandb")
    (info,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    assert (info.run_id, info.project, info.run_group, info.display_name, list(info.tags), info.job_type) == \
        (run_id, "fewstep", tmp_path.name, f"{tmp_path.name}/run", ["toy"], "train")
    updates = [*info.config.update, *(i for r in recs if r.WhichOneof("record_type") == "config"
                                      for i in r.config.update)]
    config = {i.key: json.loads(i.value_json) for i in updates}
    assert config["objective"]["name"] == "fm" and config["train"]["steps"] == 6  # the resolved recipe

    report = evaluate_run(run, regs)
    # the same W&B run: wandb names each session offline-run-<time>-<id>, adding -1 when two share a second
    assert len(_sessions(run)) == 2 and all(run_id in f.name for f in _sessions(run))
    (logged,) = [r for r in _history(run) if "eval/energy/1 steps" in r]
    assert logged["step"] == 6 and logged["eval/energy/2 steps"] == pytest.approx(report["rows"][1]["energy"])


def test_a_resumed_run_continues_the_same_wandb_run(write, tmp_path, regs):
    recipe, run = write("wb.yaml", RECIPE), tmp_path / "run"
    train_recipe(recipe, run_dir=run, registries=regs, progress=False, stop_after=3)
    first = (run / "wandb_id.txt").read_text()
    train_recipe(recipe, run_dir=run, registries=regs, progress=False)
    assert (run / "wandb_id.txt").read_text() == first and len(_sessions(run)) == 2
    assert _losses(run) == pytest.approx({r["step"]: r["loss"] for r in read_metrics(run)}, rel=1e-6)
