"""Does a small-gap IMM map follow the posterior's mean or its median? (docs/imm.md §11, issue 16)

    .venv/bin/python bench/imm_small_gaps.py RUN [RUN ...] [--gap 0.01] [--t 0.3 0.5 0.85]

For each run (a finished IMM run on 2-D data under OT-FM + Euler-FM) and each time t: x_t drawn from the data
and the prior, the map's denoised estimate x^ = x_t - t v^ with the velocity its small-gap map implies,
v^ = (x_t - f(x_t, t - gap, t)) / gap; and, independently of the model, the Monte-Carlo posterior of x given
x_t over a large data sample (weights N(x_t; (1 - t) x_i, (t sigma_d)^2 I)): its mean, and its geometric
median (Weiszfeld's iteration). Printed per t: the mean distance of x^ to each, and the share of points
where x^ is closer to the median. A map trained to the mean (flow matching's target) sits at the mean; the
mechanism of docs/imm.md §11 predicts IMM's Laplace small-gap map drifts toward the median.
"""
from __future__ import annotations

import argparse

import torch


def weighted_median(x: torch.Tensor, w: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Geometric median of points x [N, D] with weights w [B, N], per row of w (Weiszfeld 1937)."""
    m = w @ x  # start at the weighted mean
    for _ in range(iters):
        d = torch.cdist(m, x).clamp_min(1e-9)  # [B, N]
        a = w / d
        m = (a @ x) / a.sum(1, keepdim=True)
    return m


def main() -> None:
    import fewstep

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--gap", type=float, default=0.01, help="t - s of the small-gap map (default 0.01)")
    ap.add_argument("--t", type=float, nargs="+", default=[0.3, 0.5, 0.85])
    ap.add_argument("--n", type=int, default=512, help="points x_t per t (default 512)")
    ap.add_argument("--data", type=int, default=20000, help="data points for the Monte-Carlo posterior")
    args = ap.parse_args()
    torch.manual_seed(0)
    for path in args.runs:
        run = fewstep.load_run(path)
        fm, ds = run.flowmap, run.dataset
        sd = fm.interpolant.sigma_d
        data = ds.sample(args.data, torch.Generator().manual_seed(1)).x.double()
        print(f"{path}: {run.recipe.objective.name}, kernel {run.recipe.objective.kernel.name}")
        for t in args.t:
            x0 = ds.sample(args.n, torch.Generator().manual_seed(2)).x.double()
            x_t = (1 - t) * x0 + t * sd * torch.randn_like(x0)
            tt = torch.full((args.n,), t, dtype=torch.float32)
            with torch.no_grad():
                f = fm.f(x_t.float(), tt - args.gap, tt).double()
            x_hat = x_t - t * (x_t - f) / args.gap
            logw = -((x_t[:, None] - (1 - t) * data[None]) ** 2).sum(-1) / (2 * (t * sd) ** 2)
            w = torch.softmax(logw, dim=1)
            mean, median = w @ data, weighted_median(data, w)
            d_mean, d_median = (x_hat - mean).norm(dim=1), (x_hat - median).norm(dim=1)
            gap = (mean - median).norm(dim=1)
            print(f"  t={t:.2f}: |x^ - mean| {d_mean.mean():.4f}  |x^ - median| {d_median.mean():.4f}  "
                  f"|mean - median| {gap.mean():.4f}  closer to the median: {(d_median < d_mean).double().mean():.0%}")


if __name__ == "__main__":
    main()
