"""Each objective's training-step time over flow matching's, in the framework's own loop.

    .venv/bin/python bench/objectives.py                          # the toy recipes: 4x256 MLP, batch 1024
    .venv/bin/python bench/objectives.py --data digits --unet     # the digits recipes with a small UNet
    .venv/bin/python bench/objectives.py --only fm meanflow tvm --steps 20 --repeats 3
    .venv/bin/python bench/objectives.py --only tvm tvm:objective.fused_pass=false   # a variant beside it

For every objective, its ``<name>_toy.yaml`` (or ``<name>_digits.yaml``) recipe is loaded with the same
network and FM's batch (``--batch`` sets another) and trained by ``fewstep.train.loop.train`` in a paused
worker thread (common.SteppedLoop), one step of each objective in turn, so all see the same machine load.
Printed: the median step time and the ratio to FM per chunk (min / median / max). Target: the objectives
that take a forward-mode JVP without back-propagating through it (MeanFlow, sCT) at <= 1.8x FM, one
forward-mode pass costing about one extra forward. TVM back-propagates through its JVP's tangent and adds
an FM forward and an EMA pass: about 3.3x FM by pass count (bench/README.md), printed without a target.
With ``--unet`` the network is the digits UNet (16 x 16 digits, channels 32/64, attention at the second
level), the JVP going through its attention layers.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import common as C
from overhead import framework_loop

OBJECTIVES = ["fm", "ct", "imm", "shortcut", "meanflow", "sct", "tvm"]
JVP = {"meanflow", "sct"}  # a JVP without a backward through it; TVM has one
UNET = ["network={name: unet, channels: [32, 64], attention: [false, true], layers_per_block: 1, norm_groups: 8, "
        "dropout: 0.0}", "data.size=16"]


def main() -> None:
    ap = C.parser(__doc__.split("\n\n")[0], recipe=None)
    ap.add_argument("--data", choices=("toy", "digits"), default="toy", help="which recipes (default toy)")
    ap.add_argument("--unet", action="store_true", help="the digits UNet instead of the recipes' MLP")
    ap.add_argument("--only", nargs="+", default=None,
                    help=f"objectives to time (default {' '.join(OBJECTIVES)}); NAME:PATH=VALUE adds a variant of "
                         "NAME's recipe with that field set")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per chunk and objective (default 30)")
    ap.add_argument("--warm", type=int, default=5, help="untimed steps per objective first (default 5)")
    args = ap.parse_args()
    device = C.setup(args)
    names = args.only or OBJECTIVES
    if "fm" not in names:
        names = ["fm", *names]
    extra = ["train.sample_every=1", "train.steps=1000000000", *(UNET if args.unet else [])]
    loops, tmp = {}, tempfile.TemporaryDirectory()
    batch = args.batch or C.load(f"recipes/fm_{args.data}.yaml", device, None, extra)[0].train.batch_size
    for name in names:  # FM's batch for every objective (tvm_toy.yaml trains at a quarter of it)
        base, _, change = name.partition(":")
        path = f"recipes/{base}_{args.data}.yaml"
        recipe, comps = C.load(path, device, batch, [*extra, *([change] if change else [])])
        loops[name] = C.SteppedLoop(framework_loop(comps, Path(tmp.name) / name), device, args.threads)
        print(f"{name}: {path}, network {recipe.network.name}, batch {recipe.train.batch_size}", flush=True)
    t = C.race_loops(loops, args, device, "objective", tmp)
    for name in names[1:]:
        rs = C.ratios(t[name], t["fm"])
        if name.partition(":")[0] in JVP:
            C.report_ratio(f"{name} / fm", rs, "<= 1.8x", C.spread(rs)[1] <= 1.8)
        else:
            C.report_ratio(f"{name} / fm", rs)


if __name__ == "__main__":
    main()
