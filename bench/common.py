"""Shared helpers of the bench scripts: flags, clocks, step-interleaved races and ratio statistics.

Not a script; imported by ``bench/overhead.py``, ``bench/sampling.py`` and ``bench/profile_step.py``.

Timing discipline (the machine is a small VM shared with tests and training runs):
- one torch thread by default (``--threads``);
- the sides of a ratio are interleaved at the finest grain, one step (or one sampling call) of
  each side in turn, the order alternating every round, so both sides of a ratio see the same
  machine load; a training loop runs in a worker thread that is paused after every step (only one
  thread runs at any time), so the framework's own loop can be interleaved with a bare one;
- the steps are cut into ``--repeats`` consecutive chunks; per chunk and side the figure is the
  median step (robust to another process taking the CPU; the default on CPU) or the mean step;
  a ratio is formed per chunk, and its min / median / max over chunks is reported;
- the clock is this process's CPU time on CPU (other processes do not count; ``--clock wall`` for
  wall time) and wall time on CUDA, where ``torch.cuda.synchronize`` precedes every clock read and
  each side runs ``--per-turn`` steps per turn (default 20) so the GPU queue stays full.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

_now = time.perf_counter  # set by setup(): process CPU time or wall time


def parser(doc: str, recipe: str | None = "recipes/imm_toy.yaml") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--repeats", type=int, default=7, help="chunks of steps, one ratio each (default 7)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="cpu: this process's CPU time (default on CPU); wall: perf_counter (always on CUDA)")
    p.add_argument("--stat", choices=("median", "mean"), default=None,
                   help="per-chunk figure: median step (default on CPU) or mean step (default on CUDA)")
    p.add_argument("--per-turn", type=int, default=None, help="steps per turn (default 1 on CPU, 20 on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    if recipe is not None:
        p.add_argument("--recipe", default=recipe, help=f"recipe (default {recipe})")
    return p


def setup(args) -> torch.device:
    """Apply --threads, --device and the clock; fill in the device-dependent defaults."""
    global _now
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available here")
    if cuda and args.clock == "cpu":
        sys.exit("--clock cpu does not see GPU time; use wall on CUDA")
    args.clock = args.clock or ("wall" if cuda else "cpu")
    args.stat = args.stat or ("mean" if cuda else "median")
    args.per_turn = args.per_turn or (20 if cuda else 1)
    _now = time.process_time if args.clock == "cpu" else time.perf_counter
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """The bench clock (see --clock) once the device has finished its queued work."""
    sync(device)
    return _now()


def machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    kind = "process CPU time" if _now is time.process_time else "wall time"
    return (f"{name}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {kind}, "
            f"load average {os.getloadavg()[0]:.1f}")


class _Stop(Exception):
    pass


class SteppedLoop:
    """Runs ``loop(on_step)`` (a training loop that calls ``on_step()`` after every step) in a
    worker thread that pauses after every ``k`` steps; :meth:`run` lets it do k steps and returns
    the seconds per step, measured inside the worker between resuming and pausing."""

    def __init__(self, loop: Callable[[Callable[[], None]], object], device: torch.device, threads: int):
        self.device, self._go, self._paused = device, threading.Semaphore(0), threading.Semaphore(0)
        self._k = self._left = 1
        self._stop, self._error, self._figure, self._t0 = False, None, 0.0, 0.0

        def on_step() -> None:
            self._left -= 1
            if self._left:
                return
            self._figure = (clock(device) - self._t0) / self._k
            self._paused.release()
            self._go.acquire()
            if self._stop:
                raise _Stop
            self._left, self._t0 = self._k, clock(device)

        def body() -> None:
            torch.set_num_threads(threads)  # per-thread under OpenMP
            if device.type == "cuda":
                torch.cuda.set_device(device)
            self._go.acquire()
            self._t0 = clock(device)
            try:
                loop(on_step)
            except _Stop:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc
            self._stop = True
            self._paused.release()

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()

    def run(self, k: int = 1) -> float:
        if self._stop:
            raise RuntimeError(f"the loop ended early: {self._error!r}")
        self._k = self._left = k
        self._go.release()
        self._paused.acquire()
        if self._error is not None:
            raise self._error
        return self._figure

    def close(self) -> None:
        if not self._stop:
            self._stop = True
            self._go.release()
        self._thread.join()


def timed(fn: Callable[[], object], device: torch.device) -> Callable[[int], float]:
    """A side for :func:`race` from a plain call: run(k) calls ``fn`` k times, returns seconds per call."""
    def run(k: int) -> float:
        t0 = clock(device)
        for _ in range(k):
            fn()
        return (clock(device) - t0) / k
    return run


def race(sides: dict[str, Callable[[int], float]], repeats: int, steps: int, warm: int, per_turn: int,
         stat: str) -> dict[str, list[float]]:
    """Interleave the sides, ``per_turn`` steps each turn, alternating the order every round.

    A side is a callable ``run(k) -> seconds per step over k steps``. After ``warm`` unmeasured
    steps per side, ``repeats`` chunks of ``steps`` steps are timed; returns name -> one figure per
    chunk (median or mean of its turns)."""
    names = list(sides)
    for n in names:
        sides[n](warm)
    turns = max(1, steps // per_turn)
    out: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        got: dict[str, list[float]] = {n: [] for n in names}
        for r in range(turns):
            for n in (names if r % 2 == 0 else names[::-1]):
                got[n].append(sides[n](per_turn))
        for n in names:
            out[n].append(statistics.median(got[n]) if stat == "median" else statistics.fmean(got[n]))
    return out


def race_loops(loops: dict[str, SteppedLoop], args, device: torch.device, per: str = "side",
               tmp=None) -> dict[str, list[float]]:
    """:func:`race` over training loops with the flags' settings: print the machine and the plan, race,
    close every loop (and ``tmp``, their run folders) whatever happens, print each one's step time."""
    print(f"machine: {machine(device)}\n{args.repeats} chunks x {args.steps} steps per {per}, interleaved "
          f"{args.per_turn} step(s) per turn; per-chunk figure: {args.stat} step", flush=True)
    try:
        t = race({n: lp.run for n, lp in loops.items()}, args.repeats, args.steps, args.warm, args.per_turn,
                 args.stat)
    finally:
        for lp in loops.values():
            lp.close()
        if tmp is not None:
            tmp.cleanup()
    for name, v in t.items():
        print(f"  {name:<9s} step {fmt_ms(v)}")
    return t


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-chunk ratios num[i] / den[i] (both measured in the same chunk)."""
    return [a / b for a, b in zip(num, den)]


def fmt_ms(values: list[float]) -> str:
    lo, med, hi = spread(values)
    return f"{med * 1e3:8.3f} ms  (min {lo * 1e3:.3f}, max {hi * 1e3:.3f})"


def report_ratio(label: str, rs: list[float], target: str | None = None, ok: bool | None = None) -> str:
    lo, med, hi = spread(rs)
    line = f"{label:<42s} median {med:6.3f}x   min {lo:6.3f}x   max {hi:6.3f}x"
    if target is not None:
        line += f"   target {target}: {'MET' if ok else 'MISSED'}"
    print(line, flush=True)
    return line


def registries():
    from fewstep.plugins import get_registries

    return get_registries()


def load(recipe_path: str, device: torch.device, batch: int | None, extra: list[str] = ()):
    """(recipe, components) for ``recipe_path`` on ``device``, optionally with another batch size."""
    from fewstep.config import load_recipe
    from fewstep.run.components import build_components

    regs = registries()
    path = Path(recipe_path) if Path(recipe_path).exists() else ROOT / recipe_path
    overrides = [f"train.device={device}"] + ([f"train.batch_size={batch}"] if batch else []) + list(extra)
    recipe = load_recipe(path, overrides, regs)
    return recipe, build_components(recipe, regs, device)
