"""1-step sampling throughput: ``fewstep.samplers.generate`` (pushforward, 1 step) vs the bare backbone.

    .venv/bin/python bench/sampling.py                       # batches 4096 and 256, imm_toy, 1 thread
    .venv/bin/python bench/sampling.py --batch 1024 --recipe recipes/fm_toy.yaml
    .venv/bin/python bench/sampling.py --device cuda --steps 200

(c) samples/s of ``generate(flowmap, Pushforward, n_steps=1, n=B, batch_size=B)`` divided by
samples/s of one bare forward pass of the backbone on a batch of B (torch.no_grad, inputs built
beforehand); target >= 0.95x. Also shown: a bare 1-step sampler written by hand (draw the prior
noise, scale by c_in, one forward, f = x - sigma_d (T - eps) G), which is the least a 1-step sampler
must do, so the gap between the two bare figures is the cost of the noise draw and the f maths.
The hand-written sampler's output is checked against ``generate``'s for the same generator first.
"""
from __future__ import annotations

import math

import common as C
import torch


def main() -> None:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed calls per chunk and side (default 30)")
    ap.add_argument("--warm", type=int, default=5, help="untimed calls per side first (default 5)")
    args = ap.parse_args()
    device = C.setup(args)
    from fewstep.samplers import Pushforward, generate

    recipe, comps = C.load(args.recipe, device, None)
    setup = (recipe.interpolant.name, recipe.flowmap.parameterisation, recipe.flowmap.second_time)
    if setup != ("ot_fm", "euler_fm", "s"):
        raise SystemExit("the bare sampler covers OT-FM + euler_fm + second_time s")
    fm, net, ip = comps.flowmap, comps.net.eval(), comps.interpolant
    sampler = comps.sampler if comps.sampler.name == "pushforward" else Pushforward()
    shape, sd, T, eps, c = tuple(comps.dataset.shape), ip.sigma_d, ip.T, ip.eps, fm.time_scale
    c_in = 1.0 / (sd * math.sqrt((1 - T) ** 2 + T**2))
    print(f"{args.recipe}: {type(net).__name__}, sampler {sampler.name} at 1 step "
          f"(t = {T} -> s = {eps})\nmachine: {C.machine(device)}\n{args.repeats} chunks x {args.steps} calls "
          f"per side, interleaved {args.per_turn} call(s) per turn; per-chunk figure: {args.stat} call", flush=True)
    for B in ([args.batch] if args.batch else [4096, 256]):
        t_in = torch.full((B,), c * T, device=device)
        s_in = torch.full((B,), c * eps, device=device)
        u = torch.randn((B, *shape), device=device)

        @torch.no_grad()
        def bare_forward(u=u, t_in=t_in, s_in=s_in):
            return net(u, t_in, s_in)

        @torch.no_grad()
        def bare_sampler(gen=None, B=B, t_in=t_in, s_in=s_in):
            x = sd * torch.randn((B, *shape), generator=gen, device=device)
            return x - (sd * (T - eps)) * net(c_in * x, t_in, s_in)

        def framework(gen=None, B=B):
            return generate(fm, sampler, 1, B, shape, generator=gen, device=device, batch_size=B)[0]

        def seed():
            return torch.Generator(device).manual_seed(3)
        a, b = framework(seed()), bare_sampler(seed())
        err = (a - b).abs().max().item()
        if err > 1e-5 * max(1.0, a.abs().max().item()):
            raise SystemExit(f"batch {B}: bare sampler differs from generate by {err:.2e}")
        _, nfe = generate(fm, sampler, 1, B, shape, device=device, batch_size=B)
        sides = {"generate": C.timed(framework, device), "bare_forward": C.timed(bare_forward, device),
                 "bare_sampler": C.timed(bare_sampler, device)}
        t = C.race(sides, args.repeats, args.steps, args.warm, args.per_turn, args.stat)
        print(f"batch {B} (NFE {nfe}; generate == bare sampler to {err:.1e}):")
        for name, v in t.items():
            print(f"  {name:<13s} {C.fmt_ms(v)}   {B / C.spread(v)[1]:12,.0f} samples/s")
        rs = C.ratios(t["bare_forward"], t["generate"])  # throughput ratio = inverse time ratio
        C.report_ratio(f"(c) batch {B}: generate / bare forward", rs, ">= 0.95x", C.spread(rs)[1] >= 0.95)
        C.report_ratio(f"    batch {B}: generate / bare sampler", C.ratios(t["bare_sampler"], t["generate"]))


if __name__ == "__main__":
    main()
