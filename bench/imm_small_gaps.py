"""Does a small-gap IMM map follow the posterior's mean or its median? (docs/imm.md §11, issue 16)

    .venv/bin/python bench/imm_small_gaps.py RUN [RUN ...] [--gap 0.01] [--t 0.3 0.5 0.85]

For each run (a finished run on 2-D data, any objective and interpolant) and each time t: x_t drawn from the data
and the prior, the map's denoised estimate x^ (x_t - t v^ under OT-FM) from the velocity its small-gap map implies,
v^ = (x_t - f(x_t, t - gap, t)) / gap; and, independently of the model, the Monte-Carlo posterior of x given
x_t over a large data sample (fewstep.eval.posterior): its mean, and its geometric median. Printed per t: the
mean distance of x^ to each, and the share of points where x^ is closer to the median. A map trained to the
mean (flow matching's target) sits at the mean; the mechanism of docs/imm.md §11 predicts that IMM's Laplace
small-gap map drifts toward the median. Runs named <entry>-<data>-s<seed> (a bench's runs/ folder) are also
averaged over their seeds in a closing markdown table.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from fewstep.eval.posterior import geometric_median, posterior_weights


def measure(run, t: float, gap: float, n: int, n_data: int) -> dict[str, float]:
    """Distances of the map's denoised estimate at time t to the posterior's mean and median (one run)."""
    fm, ds, ip = run.flowmap, run.dataset, run.flowmap.interpolant
    data = ds.sample(n_data, torch.Generator().manual_seed(1)).x.double()
    x0 = ds.sample(n, torch.Generator().manual_seed(2)).x.double()
    noise = ip.prior(tuple(x0.shape), torch.Generator().manual_seed(3), dtype=torch.float64)  # std sigma_d
    tt = torch.tensor(t, dtype=torch.float64)
    a, s, da, ds_dt = ip.alpha(tt).item(), ip.sigma(tt).item(), ip.d_alpha(tt).item(), ip.d_sigma(tt).item()
    x_t = ip.interpolate(x0, noise, tt)
    times = torch.full((n,), t, dtype=torch.float32)
    with torch.no_grad():
        v = (x_t - fm.f(x_t.float(), times - gap, times).double()) / gap
    # x_t = a x + s eps and v = a' x + s' eps, solved for x (OT-FM: x = x_t - t v)
    x_hat = (ds_dt * x_t - s * v) / (ds_dt * a - s * da)
    w = posterior_weights(x_t, data, a, s * ip.sigma_d)
    mean, median = w @ data, geometric_median(data, w, iters=100, tol=1e-6)  # error << the distances reported
    d_mean, d_median = (x_hat - mean).norm(dim=1), (x_hat - median).norm(dim=1)
    return {"d_mean": d_mean.mean().item(), "d_median": d_median.mean().item(),
            "mean_median": (mean - median).norm(dim=1).mean().item(),
            "closer_to_median": (d_median < d_mean).double().mean().item()}


def main() -> None:
    import fewstep

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--gap", type=float, default=0.01, help="t - s of the small-gap map (default 0.01)")
    ap.add_argument("--t", type=float, nargs="+", default=[0.3, 0.5, 0.85])
    ap.add_argument("--n", type=int, default=512, help="points x_t per t (default 512)")
    ap.add_argument("--data", type=int, default=20000, help="data points for the Monte-Carlo posterior")
    args = ap.parse_args()
    groups: dict[str, list[dict[float, dict[str, float]]]] = {}
    for path in args.runs:
        run = fewstep.load_run(path)
        print(f"{path}: {run.recipe.objective.name}")
        res = {}
        for t in args.t:
            r = res[t] = measure(run, t, args.gap, args.n, args.data)
            print(f"  t={t:.2f}: |x^ - mean| {r['d_mean']:.4f}  |x^ - median| {r['d_median']:.4f}  "
                  f"|mean - median| {r['mean_median']:.4f}  closer to the median: {r['closer_to_median']:.0%}")
        groups.setdefault(re.sub(r"-s\d+$", "", Path(path).name), []).append(res)
    print("\n| run (seeds) | " + " | ".join(f"t = {t}: closer to median, |x^ - mean| / |x^ - median|"
                                           for t in args.t) + " |")
    print("|---|" + "---|" * len(args.t))
    for name, results in groups.items():
        cells = []
        for t in args.t:
            avg = {k: sum(r[t][k] for r in results) / len(results) for k in results[0][t]}
            cells.append(f"{avg['closer_to_median']:.0%}, {avg['d_mean']:.3f} / {avg['d_median']:.3f}")
        print(f"| {name} ({len(results)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
