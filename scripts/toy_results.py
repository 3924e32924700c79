"""IMM vs consistency training vs flow matching on toy data, as in the README's results section.

    .venv/bin/python scripts/toy_results.py                      # 8-gaussians and checkerboard
    .venv/bin/python scripts/toy_results.py --data moons
    .venv/bin/python scripts/toy_results.py --ablation group_size=1,2,4,8

Trains recipes/fm_toy.yaml, ct_toy.yaml and imm_toy.yaml on each data set (same network, budget and
seeds; a run already finished with the same recipe is reused, an interrupted one resumed), evaluates
their EMA weights at 1, 2, 4, 8 steps on the same noise and reference data, and prints markdown tables
of energy distance and SW2 with the checks of issues 3 and 4. With ``--ablation FIELD=V1,V2,...`` it trains
IMM once per value of ``objective.FIELD`` instead.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fewstep.config import load_recipe
from fewstep.eval.evaluate import evaluate_run
from fewstep.plugins import get_registries
from fewstep.train import train_recipe
from fewstep.train.checkpoint import latest_checkpoint
from fewstep.train.rundir import blocking_changes, group_dir, is_finished

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("energy", "sw2")


def finished_run(recipe_path: Path, overrides: list[str], regs) -> Path | None:
    """The newest finished run of this recipe (with these overrides), if there is one."""
    recipe = load_recipe(recipe_path, overrides, regs)
    group = group_dir(recipe, recipe_path)
    for run in sorted((d for d in group.glob("*") if d.is_dir()), reverse=True):
        ckpt = latest_checkpoint(run)
        if is_finished(run) and not blocking_changes(run, recipe) and ckpt.name == f"step_{recipe.train.steps:07d}":
            return run
    return None


def run_one(label: str, recipe_path: Path, overrides: list[str], regs) -> dict:
    run = finished_run(recipe_path, overrides, regs)
    seconds = None
    if run is None:
        t0 = time.perf_counter()
        run = train_recipe(recipe_path, overrides, registries=regs).run_dir
        seconds = time.perf_counter() - t0
    ev = evaluate_run(run, regs, steps=[1, 2, 4, 8])
    rows = {r["steps"]: r for r in ev["rows"]}
    print(f"{label}: {run}" + (f" (trained in {seconds:.0f} s)" if seconds else " (reused)"), flush=True)
    return {"label": label, "run": str(run), "rows": rows, "floor": ev["floor"], "seconds": seconds}


def table(results: list[dict], metric: str) -> str:
    steps = [1, 2, 4, 8, 64]
    lines = [f"| {metric} | " + " | ".join(f"{k} step{'s' if k > 1 else ''}" for k in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for res in results:
        lines.append(f"| {res['label']} | " + " | ".join(
            f"{res['rows'][k][metric]:.4g}" if k in res["rows"] else "–" for k in steps) + " |")
    lines.append(f"| data vs data (floor) | {results[0]['floor'][metric]:.4g} |" + " |" * (len(steps) - 1))
    return "\n".join(lines)


def checks(fm: dict, ct: dict, imm: dict) -> list[str]:
    e, s = (lambda r, k: r["rows"][k]["energy"]), (lambda r, k: r["rows"][k]["sw2"])
    out = [(f"energy IMM 2 steps {e(imm, 2):.4g} <= FM 8 steps {e(fm, 8):.4g}", e(imm, 2) <= e(fm, 8)),
           (f"energy IMM 1 step {e(imm, 1):.4g} <= FM 4 steps {e(fm, 4):.4g}", e(imm, 1) <= e(fm, 4)),
           (f"SW2 IMM 1 step {s(imm, 1):.4g} <= FM 1 step / 4 = {s(fm, 1) / 4:.4g}", s(imm, 1) <= s(fm, 1) / 4),
           (f"SW2 CT 1 step {s(ct, 1):.4g} < FM 1 step {s(fm, 1):.4g}", s(ct, 1) < s(fm, 1)),
           (f"SW2 CT 2 steps {s(ct, 2):.4g} < FM 2 steps {s(fm, 2):.4g}", s(ct, 2) < s(fm, 2)),
           (f"CT 2 steps better than 1 step: SW2 {s(ct, 2):.4g} < {s(ct, 1):.4g}, energy {e(ct, 2):.4g} < {e(ct, 1):.4g}",
            s(ct, 2) < s(ct, 1) and e(ct, 2) < e(ct, 1))]
    return [f"- [{'x' if ok else ' '}] {text}" for text, ok in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["eight_gaussians", "checkerboard"])
    ap.add_argument("--ablation", metavar="FIELD=V1,V2", help="train IMM once per value of objective.FIELD")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = ap.parse_args()
    regs = get_registries()
    fm_recipe, ct_recipe, imm_recipe = (ROOT / "recipes" / f"{m}_toy.yaml" for m in ("fm", "ct", "imm"))
    for data in args.data:
        base = [f"data.name={data}", *args.set]
        if args.ablation:
            field, values = args.ablation.split("=", 1)
            results = [run_one(f"IMM {field}={v}", imm_recipe,
                               base + [f"objective.{field}={v}", f"output.name=imm_{data}_{field}{v}"], regs)
                       for v in values.split(",")]
        else:
            results = [run_one("FM (Euler)", fm_recipe, base + [f"output.name=fm_{data}"], regs),
                       run_one("CT (restart)", ct_recipe, base + [f"output.name=ct_{data}"], regs),
                       run_one("IMM (pushforward)", imm_recipe, base + [f"output.name=imm_{data}"], regs)]
        print(f"\n### {data}\n")
        for metric in METRICS:
            print(table(results, metric) + "\n")
        if not args.ablation:
            print("\n".join(checks(*results)) + "\n")


if __name__ == "__main__":
    main()
