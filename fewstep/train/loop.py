"""The training loop: one explicit function, edm2-style, read top to bottom.

Every step reseeds its random streams from (seed, shard, step), so a run resumed from a checkpoint
draws exactly the data, times and noise an uninterrupted run would, and ends with identical
weights on CPU (with the same device, threads, precision and compile setting: see
``fewstep.run.rundir.NUMERIC_CHANGES``). The loop never special-cases an objective: it calls
``objective.loss(flowmap, batch, step)`` and steps the optimiser. What a checkpoint restores besides
the weights is registered once in a :class:`~fewstep.train.state.TrainState` (a
:class:`~fewstep.protocols.Stateful` objective included).
"""
from __future__ import annotations

import hashlib
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fewstep.config import recipe_dict
from fewstep.errors import ConfigError, NonFiniteTangent, TrainingDiverged, TrainingInterrupted
from fewstep.networks.wrappers import unwrap_ddp
from fewstep.protocols import Stateful, Trainable
from fewstep.run.checkpoint import latest_checkpoint, load_state, load_weights, save_checkpoint
from fewstep.run.components import Components
from fewstep.run.dist import Dist, weights_checksum
from fewstep.run.tracking import RunInfo, Tracker
from fewstep.train.ema import EMA
from fewstep.train.interrupt import StopRequests
from fewstep.train.precision import Precision
from fewstep.train.progress import Progress
from fewstep.train.spikes import SpikeWatch
from fewstep.train.state import TrainState

# on_samples(step, ema_net) -> the grid's PNG (or None): called on rank 0 when sample grids are due (the caller
# draws them); the loop hands the file to the run's loggers
SampleCallback = Callable[[int, torch.nn.Module], "Path | None"]


def step_seed(seed: int, rank: int, step: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one step (edm2's per-step reseeding)."""
    digest = hashlib.sha256(f"{seed}/{rank}/{step}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg.optimizer]
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (IMM states no decay)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    end_step: int
    seconds: float


def train(comps: Components, run_dir: Path, *, dist: Dist | None = None, progress: bool = True,
          stop_after: int | None = None, on_samples: SampleCallback | None = None,
          label: str | None = None, tracker: Tracker | None = None, group: str | None = None) -> TrainResult:
    """Train ``comps`` in ``run_dir``, resuming from its latest checkpoint if there is one.

    ``dist`` is this process's place among torchrun's (``fewstep.run.dist``); ``stop_after`` ends
    the session after that many steps (the run stays resumable); ``on_samples(step, ema_net)`` is
    called (on rank 0) when sample grids are due. ``tracker`` (rank 0) receives the records, grids and
    the session's end (default: metrics.jsonl alone, :class:`fewstep.run.tracking.Tracker`), told the run's
    ``group`` (default: the run directory's parent's name; a bench's runs share the bench's name).
    """
    cfg = comps.recipe.train
    dist = dist or Dist()
    fm, net, obj = comps.flowmap, comps.net, comps.objective

    # --- the batch split: world x accumulate shards of the global batch (train.micro_batch sets their size) ---
    try:
        accumulate, shard_size = cfg.split(dist.world)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    # --- optimiser, EMA, precision, and the state a checkpoint restores besides the weights -------
    own = list(obj.trainable(comps.device)) if isinstance(obj, Trainable) else []  # e.g. sCT's w_phi(t)
    if own and not isinstance(obj, Stateful):
        raise ConfigError("objective: it trains parameters of its own (Trainable) but cannot checkpoint them "
                          "(no state_dict / load_state_dict)")
    params = [p for p in net.parameters() if p.requires_grad] + own
    opt = make_optimizer(params, cfg)
    ema = EMA(net, cfg.ema_decay)
    prec = Precision(cfg.precision, comps.device)
    state = TrainState(optimizer=opt, ema=ema, precision=prec,
                       **({"objective": obj} if isinstance(obj, Stateful) else {}))

    # --- wrappers: DDP across processes, torch.compile; checkpoints and the EMA see the plain net -
    model = net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[comps.device.index] if comps.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    if model is not net:
        fm = fm.with_net(model)

    # --- resume from the latest checkpoint ---------------------------------------------------------
    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        load_weights(ckpt / "model.safetensors", net)
        load_weights(ckpt / "ema.safetensors", ema.net)
        saved = load_state(ckpt)
        state.load_state_dict(saved, ckpt / "state.pt")
        start = int(saved["step"])
    config = recipe_dict(comps.recipe)
    tracker = (tracker or Tracker.build()) if dist.main else None
    if tracker is not None:  # metrics.jsonl drops the records logged after the checkpoint: they come again
        run_group = group or run_dir.parent.name  # (the steps below reuse `group` for optimiser groups)
        tracker.start(RunInfo(run_dir, run_group, f"{run_group}/{run_dir.name}", config, cfg.steps, start))
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)

    def checkpoint(step: int) -> None:
        if dist.main:
            save_checkpoint(run_dir, step, net, ema.net, state.state_dict(), config, keep=cfg.keep_checkpoints)
        dist.barrier()

    def out_of_memory(micro: int, acc: int) -> ConfigError:
        smaller = max(1, micro // 2)
        return ConfigError(f"train.micro_batch: CUDA ran out of memory at {micro} samples per pass on one device "
                           f"(batch_size {cfg.batch_size} / {dist.world} process(es) / {acc} accumulation step(s)); "
                           f"try --set train.micro_batch={smaller} (the same optimiser steps); the last checkpoint is "
                           f"in {run_dir / 'checkpoints'}")

    def diverged(what: str, value: torch.Tensor, step: int) -> TrainingDiverged:
        return TrainingDiverged(f"{what} is {value.item()} at step {step + 1}; "
                                f"last good checkpoint kept in {run_dir / 'checkpoints'}")

    # --- the steps -----------------------------------------------------------------------------------
    bar = Progress(cfg.steps, start, label or run_dir.parent.name, enabled=progress and dist.main)
    t_start = t_log = time.perf_counter()
    loss_sum, n_sum, logs_sum = torch.zeros((), device=comps.device), 0, {}
    spikes, n_spikes = SpikeWatch(cfg.spike_factor), 0
    net.train()
    on_cuda = comps.device.type == "cuda"

    def samples(step: int) -> None:
        png = on_samples(step, ema.net)
        if png is not None:
            tracker.image(step, "samples", png)

    stops = StopRequests().install()  # SIGINT/SIGTERM: finish the step, write a checkpoint, then stop
    status = "failed"  # what the loggers are told at the end: finished, stopped (resumable) or failed
    try:
        try:
            for step in range(start, end):
                # one optimiser step: accumulate the shards of this process, then step
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, cfg)
                opt.zero_grad(set_to_none=True)
                for m in range(accumulate):
                    shard = dist.rank * accumulate + m  # its seeds: the same whatever the process layout
                    obj_seed = step_seed(cfg.seed, shard, step, "objective")
                    torch.default_generator.manual_seed(obj_seed)  # torch.manual_seed costs ~0.2-0.5 ms a call
                    if on_cuda:  # (it queues lazy seeds for every accelerator type, with a stack trace each)
                        torch.cuda.manual_seed(obj_seed)
                    gen = torch.Generator().manual_seed(step_seed(cfg.seed, shard, step, "data"))
                    batch = comps.dataset.sample(shard_size, gen)
                    batch = type(batch)(*(None if v is None else v.to(comps.device, non_blocking=True) for v in batch))
                    last = m == accumulate - 1
                    with (unwrap_ddp(model).no_sync() if dist.world > 1 and not last else nullcontext()):
                        try:
                            with prec.autocast(), fm.augmented(batch.augment):  # EDM's labels, if augmented
                                loss, logs = obj.loss(fm, batch, step)
                            if not torch.isfinite(loss):
                                raise diverged("loss", loss, step)
                            prec.backward(loss / accumulate)
                        except torch.cuda.OutOfMemoryError:
                            raise out_of_memory(shard_size, accumulate) from None
                        except NonFiniteTangent as exc:
                            raise TrainingDiverged(f"{exc} at step {step + 1}; last good checkpoint kept in "
                                                   f"{run_dir / 'checkpoints'}") from None
                    if m == 0 and (spike := spikes(step + 1, float(loss.detach()))) is not None:  # reported; goes on
                        n_spikes += 1
                        if dist.main:
                            bar.note(spike)
                    loss_sum += loss.detach() / accumulate
                    for k, v in logs.items():
                        v = v.detach() if torch.is_tensor(v) else float(v)
                        logs_sum[k] = logs_sum.get(k, 0.0) + v / accumulate
                if own and dist.world > 1:  # DDP averages the network's gradients only
                    for p in own:
                        p.grad = dist.mean(p.grad if p.grad is not None else torch.zeros_like(p))
                prec.unscale(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
                if not torch.isfinite(grad_norm) and not prec.tolerates_overflow:
                    raise diverged("gradient norm", grad_norm, step)
                prec.step(opt)
                ema.update(net)
                n_sum += 1
                done = step + 1
                bar.advance(done)

                # log: means over the interval, into metrics.jsonl (rank 0) and the progress line
                if done % cfg.log_every == 0 or done == end:
                    now = time.perf_counter()
                    rec = {"step": done, "loss": dist.mean(loss_sum).item() / n_sum, "lr": opt.param_groups[0]["lr"],
                           "grad_norm": float(grad_norm), "steps_per_s": n_sum / (now - t_log),
                           "samples_per_s": n_sum * cfg.batch_size / (now - t_log),
                           **{k: float(v) / n_sum for k, v in logs_sum.items()},
                           **({"loss_spikes": n_spikes} if n_spikes else {})}
                    if dist.world > 1:  # DDP keeps the ranks equal; say so, or stop if they are not
                        sums = dist.gather(weights_checksum(net), comps.device)
                        if len(set(sums)) != 1:
                            raise TrainingDiverged(f"the ranks' weights differ at step {done}: checksums {sums}")
                        rec["rank_checksums"] = sums
                    if tracker is not None:
                        tracker.scalars(done, rec)
                    bar.status(done, {"loss": rec["loss"], "it/s": rec["steps_per_s"]})
                    loss_sum.zero_()
                    n_sum, logs_sum, t_log, n_spikes = 0, {}, now, 0

                # checkpoint and sample grids
                if done % cfg.checkpoint_every == 0 or done == end:
                    checkpoint(done)
                if dist.main and on_samples is not None and cfg.sample_every and done % cfg.sample_every == 0 \
                        and done != cfg.steps:
                    samples(done)
                if done < end and stops.requested(dist, comps.device):
                    if done % cfg.checkpoint_every != 0:
                        checkpoint(done)
                    raise TrainingInterrupted(run_dir, done, cfg.steps, stops.signal_name)
        finally:
            stops.restore()
            bar.close()
        if dist.main and on_samples is not None and end == cfg.steps:
            samples(end)
        status = "finished" if end == cfg.steps else "stopped"
    except TrainingInterrupted:
        status = "stopped"
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
    return TrainResult(run_dir, start, end, time.perf_counter() - t_start)
