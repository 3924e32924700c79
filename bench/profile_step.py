"""Where a training step's time goes: anatomy of FM and IMM steps, and profiles of the real loop.

    .venv/bin/python bench/profile_step.py                       # all three parts, imm_toy + fm_toy
    .venv/bin/python bench/profile_step.py --only anatomy --batch 256
    .venv/bin/python bench/profile_step.py --only python --recipe recipes/fm_toy.yaml --profile-steps 40

anatomy: bare steps (as in overhead.py), timed interleaved: FM, FM plus one extra no-grad forward
    (IMM's target pass alone), IMM, IMM without its target forward (its loss maths alone), IMM
    with the (t, s) embedding computed once per group of M (same loss); and pieces: the backbone's
    no-grad forward, its (t, s) embedding, each loss's maths around a free stub network. Explains
    target (b): what IMM / FM costs, and why.
torch: ``torch.profiler`` (record_shapes, grouped by input shape) over ``--profile-steps`` steps of
    ``fewstep.train.loop.train`` on ``--recipe``; top ops by self CPU time.
python: cProfile over the same loop; the framework's Python functions by own time, and the
    per-step cost of the known suspects (torch.manual_seed, EMA.update, ...).
"""
from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
from pathlib import Path

import common as C
import overhead as O
import torch


def _variants(p_fm, p_imm, M: int) -> dict:
    """Bare loss variants that isolate what IMM costs over FM (same maths otherwise)."""
    def fm_plus_forward(net, x, p):  # FM + one extra no-grad forward: IMM's target pass, alone
        with torch.no_grad():
            net(x, 1000 * x[:, 0], 1000 * x[:, 1])
        return O.fm_loss(net, x, p)

    def imm_no_target(net, x, p):  # IMM with y~ from a free stand-in instead of the target forward
        calls = []

        def net2(u, t, s):
            calls.append(1)
            return net(u, t, s) if len(calls) == 1 else torch.zeros_like(u)
        return O.imm_loss(net2, x, p)

    def imm_grouped(net, x, p):  # the same loss, the (t, s) embedding computed once per group of M
        def net2(u, t, s):
            emb = net.cond(t[::M], s[::M], None).repeat_interleave(M, 0)
            return net.body(torch.cat([u.flatten(1), emb], 1)).view(u.shape)
        return O.imm_loss(net2, x, p)

    return {"bare FM step": p_fm, "bare FM + 1 no-grad fwd": dict(p_fm, loss=fm_plus_forward),
            "bare IMM step": p_imm, "bare IMM, no target fwd": dict(p_imm, loss=imm_no_target),
            "bare IMM, emb per group": dict(p_imm, loss=imm_grouped)}


def anatomy(args, device) -> None:
    r_fm, c_fm = C.load(args.fm_recipe, device, args.batch)
    r_imm, c_imm = C.load(args.recipe, device, args.batch)
    p_fm, p_imm = O.bare_params(r_fm, c_fm), O.bare_params(r_imm, c_imm)
    net, B, M = c_imm.net, r_imm.train.batch_size, p_imm["M"]
    x = c_imm.dataset.sample(B, torch.Generator().manual_seed(0)).x.to(device)
    t, s = torch.rand(B, device=device) * 1000, torch.rand(B, device=device) * 1000
    w = torch.nn.Parameter(torch.ones((), device=device))
    stub = lambda u, tt, ss: w * u  # noqa: E731 - a network that costs nothing
    variants = _variants(p_fm, p_imm, M)
    if not (hasattr(net, "cond") and hasattr(net, "body")):
        del variants["bare IMM, emb per group"]  # written for the MLP backbone
    if "bare IMM, emb per group" in variants:
        torch.manual_seed(0)
        a = O.imm_loss(net, x, p_imm)
        torch.manual_seed(0)
        b = variants["bare IMM, emb per group"]["loss"](net, x, p_imm)
        print(f"IMM loss with the embedding per group == plain: |diff| {abs(a - b).item():.1e}")

    def no_grad(f):
        def run():
            with torch.no_grad():
                f()
        return run

    sides = {"net fwd, no grad": C.timed(no_grad(lambda: net(x, t, s)), device),
             "(t, s) embedding, no grad": C.timed(no_grad(lambda: net.cond(t, s, None)), device),
             "FM loss maths (stub net)": C.timed(lambda: p_fm["loss"](stub, x, p_fm).backward(), device),
             "IMM loss maths (stub net)": C.timed(lambda: p_imm["loss"](stub, x, p_imm).backward(), device)}
    if not hasattr(net, "cond"):
        del sides["(t, s) embedding, no grad"]
    comps = {"FM": c_fm, "IMM": c_imm}
    loops = {k: C.SteppedLoop(O.bare_loop(comps[k.split()[1].rstrip(",")], p, device), device, args.threads)
             for k, p in variants.items()}
    sides.update({k: v.run for k, v in loops.items()})
    print(f"== anatomy, batch {B}, {C.machine(device)}", flush=True)
    try:
        t_ = C.race(sides, args.repeats, args.steps, 3, args.per_turn, args.stat)
    finally:
        for lp in loops.values():
            lp.close()
    for k, v in t_.items():
        print(f"  {k:<27s} {C.fmt_ms(v)}")
    for k in variants:
        if k != "bare FM step":
            C.report_ratio(f"  {k} / bare FM step", C.ratios(t_[k], t_["bare FM step"]))
    if "(t, s) embedding, no grad" in t_:
        frac = C.ratios(t_["(t, s) embedding, no grad"], t_["net fwd, no grad"])
        print(f"  the (t, s) embedding is {C.spread(frac)[1]:.0%} of a no-grad forward at this batch")


def loop_once(args, device, steps: int):
    """comps and a function that runs ``steps`` steps of the real loop (after 3 untimed ones)."""
    from fewstep.train.loop import train

    _, comps = C.load(args.recipe, device, args.batch, ["train.steps=1000000000"])
    tmp = Path(tempfile.mkdtemp())
    for d in ("warm", "run"):
        (tmp / d).mkdir()
    train(comps, tmp / "warm", progress=False, stop_after=3)
    return comps, lambda: train(comps, tmp / "run", progress=False, stop_after=steps)


def torch_profile(args, device) -> None:
    from torch.profiler import ProfilerActivity, profile

    _, run = loop_once(args, device, args.profile_steps)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        run()
    print(f"== torch.profiler: {args.profile_steps} steps of fewstep.train.loop.train, {args.recipe} "
          f"(includes the final checkpoint)")
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=args.rows,
                                                               max_name_column_width=40)
    print(table)


def python_profile(args, device) -> None:
    _, run = loop_once(args, device, args.profile_steps)
    pr = cProfile.Profile()
    pr.enable()
    run()
    pr.disable()
    n = args.profile_steps
    out = io.StringIO()
    st = pstats.Stats(pr, stream=out)
    print(f"== cProfile: {n} steps of fewstep.train.loop.train, {args.recipe} (profiler overhead included)")
    st.sort_stats("tottime").print_stats(r"fewstep|plugins|random\.py|traceback|linecache", args.rows)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-6000:])
    print("  per-step cumulative time of suspects (under cProfile):")
    for (fn, line, func), (_, nc, _, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][3]):
        if func in ("manual_seed", "update", "step_seed", "format_stack", "clip_grad_norm_", "sample", "loss",
                    "velocity", "f", "G", "_times", "c_in") and ct * 1e3 / n > 0.01:
            print(f"    {ct / n * 1e3:8.3f} ms/step  {nc // n:3d} call(s)/step  {Path(fn).name}:{line} {func}")


def main() -> None:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--fm-recipe", default="recipes/fm_toy.yaml", help="FM recipe for the anatomy")
    ap.add_argument("--only", choices=("anatomy", "torch", "python"), default=None, help="run one part")
    ap.add_argument("--steps", type=int, default=20, help="anatomy: timed calls per chunk and side (default 20)")
    ap.add_argument("--profile-steps", type=int, default=20, help="steps under the profilers (default 20)")
    ap.add_argument("--rows", type=int, default=25, help="rows per profile table (default 25)")
    args = ap.parse_args()
    device = C.setup(args)
    for part, fn in (("anatomy", anatomy), ("torch", torch_profile), ("python", python_profile)):
        if args.only in (None, part):
            fn(args, device)


if __name__ == "__main__":
    main()
