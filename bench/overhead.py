"""Training-step overhead: the framework's real loop vs a bare PyTorch loop of the same maths.

    .venv/bin/python bench/overhead.py                      # 7 chunks x 50 steps per side, 1 thread, CPU
    .venv/bin/python bench/overhead.py --batch 256 --repeats 5 --steps 30
    .venv/bin/python bench/overhead.py --device cuda --steps 200

(a) framework / bare step time, for FM (``--fm-recipe``), IMM (``--recipe``), MeanFlow
    (``--meanflow-recipe``) and TVM (``--tvm-recipe``); target <= 1.05x.
(b) IMM / FM step time in the framework (same network and batch); target <= 1.40x, printed beside
    bare IMM / bare FM, which is what the maths itself costs.
(d) MeanFlow / FM in the framework; target <= 1.8x (one forward-mode pass should cost about one extra
    forward), beside the bare loop's, whose JVP is ``torch.func.jvp`` as py-meanflow's.

Framework side: ``fewstep.train.loop.train`` itself, on a temporary run directory, in a worker
thread. With ``train.sample_every=1`` the loop calls ``on_samples`` after every step; the bench
pauses it there (common.SteppedLoop), so a framework step and a bare step alternate and see the same
machine load. Set-up (optimiser, EMA copy) falls in the untimed warm-up; everything the loop does
per step is timed: per-step reseeding, data sampling, lr schedule, loss, finiteness checks,
backward, grad clip, optimiser step, EMA update, log sums (and the metrics line every log_every).

Bare side: the same network class built with the same seed, the same dataset sampler, Adam, clip
and EMA, and the loss written directly in torch (OT-FM + Euler-FM parameterisation; IMM with
M-particle groups, eta-decrement r(s, t), Laplace kernel with bandwidth 1/(sigma_d (t - s)) and
weight w(t); MeanFlow and TVM with ``torch.func.jvp`` on the network). Before timing, each bare loss and its
gradients are checked against the framework's on the same weights, batch and seed.
"""
from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import common as C
import torch


# --- the maths, written directly -----------------------------------------------------------------
def c_in(sd: float, t: torch.Tensor) -> torch.Tensor:  # 1 / (sigma_d sqrt(alpha^2 + sigma^2)), OT-FM
    return 1.0 / (sd * torch.sqrt((1 - t) ** 2 + t**2))


def fm_loss(net, x, p):
    """OT-FM: t = T - (T - eps) u, x_t = (1 - t) x + t z, z ~ N(0, sd^2), target z - x,
    velocity sd G(c_in x_t, ct, ct)."""
    sd, eps, T, c = p["sd"], p["eps"], p["T"], p["time_scale"]
    z = sd * torch.randn(x.shape, device=x.device)
    t = T - (T - eps) * torch.rand(x.shape[0], device=x.device)  # as fewstep_fm: never eps
    tc = t[:, None]
    x_t = (1 - tc) * x + tc * z
    v = sd * net(c_in(sd, tc) * x_t, c * t, c * t)
    return (v - (z - x)).pow(2).mean()


def imm_loss(net, x, p):
    """IMM (Eq. 12, 13, 67): groups of M, t ~ U(eps, T), s ~ U(eps, t), r from a constant eta step."""
    sd, eps, T, c, M, k, a, b = (p[n] for n in ("sd", "eps", "T", "time_scale", "M", "k", "a", "b"))
    G = x.shape[0] // M
    u = torch.rand(2, G, dtype=torch.float64, device=x.device)
    t = eps + (T - eps) * u[0]
    s = eps + (t - eps) * u[1]
    lo, hi = eps / (1 - eps), T / (1 - T)
    eta_r = (t / (1 - t) - (hi - lo) * 2.0**-k).clamp(lo, hi)
    r = torch.maximum(eta_r / (1 + eta_r), s)
    z = sd * torch.randn(x.shape, device=x.device)
    t_, s_, r_ = (v.repeat_interleave(M).float()[:, None] for v in (t, s, r))
    x_t, x_r = (1 - t_) * x + t_ * z, (1 - r_) * x + r_ * z
    tg, sg, rg = (c * v.float() for v in (t, s, r))  # one time per group: the MLP embeds each once
    y = x_t - sd * (t_ - s_) * net(c_in(sd, t_) * x_t, tg, sg)
    with torch.no_grad():
        y_tilde = x_r - sd * (r_ - s_) * net(c_in(sd, r_) * x_r, rg, sg)
    bw = (1.0 / (sd * (t - s))).float()[:, None, None]
    y, y_tilde = y.reshape(G, M, -1), y_tilde.reshape(G, M, -1)

    def kern(q, v):  # Laplace exp(-bw max(|q - v|, eps_k) / D) over all M x M pairs
        d = (q[:, :, None] - v[:, None]).pow(2).sum(-1).clamp_min(p["kernel_eps"] ** 2).sqrt()
        return torch.exp(-bw * d / q.shape[-1])

    mmd = (kern(y, y) + kern(y_tilde, y_tilde) - 2 * kern(y, y_tilde)).mean(dim=(1, 2))
    lam = 2 * (torch.log(1 - t) - torch.log(t))
    w = torch.sigmoid(b - lam) * (1 - t) ** a / (t * (1 - t) * ((1 - t) ** 2 + t**2))
    return (w.float() * mmd).mean()


def meanflow_loss(net, x, p):
    """MeanFlow (Geng et al. 2025, Alg. 1) as py-meanflow writes it: (r, t) logit-normal, sorted, r = t on a
    share of rows; z_t = (1 - t) x + t z, v = z - x; u = sd G(c_in z_t, ct, c(t - r)) and du/dt by
    ``torch.func.jvp`` along (v, 0, 1); loss mean((e + c_w)^-p e), e = ||u - sg(v - (t - r) du/dt)||^2."""
    sd, eps, T, c = p["sd"], p["eps"], p["T"], p["time_scale"]
    B = x.shape[0]
    t = torch.sigmoid(p["mean_t"] + p["std_t"] * torch.randn(B, device=x.device))
    r = torch.sigmoid(p["mean_r"] + p["std_r"] * torch.randn(B, device=x.device))
    t, r = torch.maximum(t, r), torch.minimum(t, r)
    r = torch.where(torch.rand(B, device=x.device) < p["share"], r, t)
    r, t = r.clamp(eps, T), t.clamp(eps, T)
    z = sd * torch.randn(x.shape, device=x.device)
    z_t, v = (1 - t[:, None]) * x + t[:, None] * z, z - x

    def u_fn(z_, r_, t_):
        return sd * net(c_in(sd, t_[:, None]) * z_, c * t_, c * (t_ - r_))

    u, du_dt = torch.func.jvp(u_fn, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    e = (u - (v - (t - r)[:, None] * du_dt).detach()).pow(2).sum(1)
    return ((e.detach() + p["c_w"]).pow(-p["p"]) * e).mean()


def tvm_loss(net, x, p):
    """TVM as lumalabs/tvm computes it, unguided: gap l = sigmoid(N(m_l, s_l)), terminal s logit-normal truncated
    to s <= 1 - l, t = min(s + l, 1), FM time s' (float64 draws); z ~ N(0, sd^2); F = sd G(c_in x, ct, c(t - s));
    f = x_t - (t - s) F and df/ds by ``torch.func.jvp`` (gradients through the tangent); v_tgt = F_EMA(sg f, s, s)
    of a 0.99 EMA target moved once per call; loss mean(|df/ds - v_tgt|^2 [s != t] + |F(x_s', s', s') - (z - x)|^2)."""
    sd, c, B, D64 = p["sd"], p["time_scale"], x.shape[0], torch.float64
    lam = p["gap_mean"] + p["gap_std"] * torch.randn(B, dtype=D64, device=x.device)
    gap = torch.sigmoid(lam)
    u = torch.rand(B, dtype=D64, device=x.device)
    s = torch.sigmoid(p["s_mean"] + p["s_std"] * torch.special.ndtri(
        u * torch.special.ndtr((-lam - p["s_mean"]) / p["s_std"])))
    t = (s + gap).clamp(max=1.0)
    sp = torch.sigmoid(p["s_mean"] + p["s_std"] * torch.randn(B, dtype=D64, device=x.device))
    s, t, sp = s.float(), t.float(), sp.float()
    z = sd * torch.randn(x.shape, device=x.device)
    x_t, x_sp = (1 - t[:, None]) * x + t[:, None] * z, (1 - sp[:, None]) * x + sp[:, None] * z
    if "target" not in p:  # the EMA target: a copy at the first step, then theta-bar <- d theta-bar + (1 - d) theta
        p["target"] = copy.deepcopy(net).requires_grad_(False).eval()
    else:
        with torch.no_grad():
            torch._foreach_lerp_(list(p["target"].parameters()), list(net.parameters()), 1 - p["decay"])

    def F(model, x_, s_, t_):
        return sd * model(c_in(sd, t_[:, None]) * x_, c * t_, c * (t_ - s_))

    f, dfds = torch.func.jvp(lambda s_: x_t - (t - s_)[:, None] * F(net, x_t, s_, t), (s,), (torch.ones_like(s),))
    v_fm = F(net, x_sp, sp, sp)
    with torch.no_grad():
        v_tgt = F(p["target"], f.detach(), s, s)
    terminal = torch.where(torch.isclose(s, t), 0.0, (dfds - v_tgt).pow(2).mean(1))
    return (terminal + (v_fm - (z - x)).pow(2).mean(1)).mean()


def bare_params(recipe, comps) -> dict:
    """The constants of the bare maths; refuses recipes it was not written for."""
    r, o = recipe, recipe.objective
    ok = (r.interpolant.name == "ot_fm" and r.flowmap.parameterisation == "euler_fm"
          and r.flowmap.second_time == ("stride" if o.name in ("meanflow", "tvm") else "s")
          and r.data.name in ("eight_gaussians", "checkerboard", "moons", "spiral"))
    if o.name == "fm":
        ok &= o.time_sampling == "uniform" and not o.minibatch_ot and o.sigma == 0
    elif o.name == "imm":
        ok &= (o.mapping == "eta" and o.bandwidth == "c_out" and o.min_gap == 0 and o.target == "online"
               and o.weight_elbo and o.weight_alpha and o.weight_norm and comps.objective.kernel.name == "laplace")
    elif o.name == "meanflow":
        ok &= o.omega == 1 and o.kappa == 0 and o.label_dropout == 0 and o.fp32
    elif o.name == "tvm":
        ok &= o.guidance == 1 and not o.fused_pass and r.interpolant.eps == 0 and r.interpolant.T == 1
    else:
        ok = False
    if not ok:
        raise SystemExit(f"the bare loop covers OT-FM + euler_fm with fm (uniform) or imm (eta mapping, laplace, "
                         f"c_out bandwidth) and second_time s, or meanflow or tvm (two passes on [0, 1]) unguided "
                         f"with stride; {o.name} recipe differs")
    ip = comps.interpolant
    p = {"sd": ip.sigma_d, "eps": ip.eps, "T": ip.T, "time_scale": r.flowmap.time_scale, "loss": fm_loss}
    if o.name == "imm":
        p.update(M=o.group_size, k=o.k, a=o.a, b=o.b, kernel_eps=comps.objective.kernel.eps, loss=imm_loss)
    if o.name == "tvm":
        p.update(gap_mean=o.gap_mean, gap_std=o.gap_std, s_mean=o.s_mean, s_std=o.s_std, decay=o.target_ema_decay,
                 loss=tvm_loss)
    if o.name == "meanflow":
        p.update(mean_t=o.logit_mean_t, std_t=o.logit_std_t, mean_r=o.logit_mean_r, std_r=o.logit_std_r,
                 share=o.share_r_neq_t, p=o.p, c_w=o.c, loss=meanflow_loss)
    return p


def check_same(comps, p, device) -> str:
    """Framework loss and gradients == bare ones on the same weights, batch and RNG seed."""
    from fewstep.data.base import Batch

    net = comps.net
    x = comps.dataset.sample(comps.recipe.train.batch_size, torch.Generator().manual_seed(7)).x.to(device)
    out = []
    for fn in (lambda: comps.objective.loss(comps.flowmap, Batch(x, None), 0)[0],
               lambda: p["loss"](net, x, p)):
        torch.manual_seed(11)
        net.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        out.append((loss.detach(), [q.grad.detach().clone() for q in net.parameters()]))
    net.zero_grad(set_to_none=True)
    (lf, gf), (lb, gb) = out
    rel = abs(lf - lb).item() / max(abs(lf).item(), 1e-30)
    gscale = max(g.abs().max().item() for g in gf)
    gerr = max((a - b).abs().max().item() for a, b in zip(gf, gb)) / max(gscale, 1e-30)
    msg = f"loss framework {lf.item():.8g} bare {lb.item():.8g} rel diff {rel:.1e}; grad max rel diff {gerr:.1e}"
    if rel > 1e-5 or gerr > 1e-4:
        raise SystemExit(f"{comps.recipe.objective.name}: bare maths differs from the framework: {msg}")
    return msg


# --- the two loops ---------------------------------------------------------------------------------
def framework_loop(comps, run_dir: Path):
    """The real loop, ``fewstep.train.loop.train``; the recipe has sample_every = 1, so the loop
    calls ``on_samples`` after every step, where the bench pauses it."""
    from fewstep.train.loop import train

    run_dir.mkdir(parents=True, exist_ok=True)
    return lambda on_step: train(comps, run_dir, progress=False, on_samples=lambda step, ema_net: on_step())


def bare_loop(comps, p, device):
    """The same network class, config and seed, the same sampler, Adam, clip and EMA; no framework."""
    from fewstep.networks import NetworkSpec

    cfg, ds, rec = comps.recipe.train, comps.dataset, comps.recipe
    torch.manual_seed(cfg.seed)
    net = C.registries().networks.build(rec.network, NetworkSpec(tuple(ds.shape), ds.num_classes, True)).to(device)
    same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), comps.net.state_dict().values()))
    assert same and type(net) is type(comps.net), "bare network differs from the framework's at init"

    def loop(on_step):
        params = list(net.parameters())
        ema = [q.detach().clone() for q in params]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
        gen = torch.Generator().manual_seed(cfg.seed)
        net.train()
        for i in range(10**9):
            x = ds.sample(cfg.batch_size, gen).x.to(device)
            opt.param_groups[0]["lr"] = cfg.lr * min(1.0, (i + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            loss = p["loss"](net, x, p)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - min(cfg.ema_decay, (1 + i) / (10 + i)))
            on_step()
    return loop


def main() -> None:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--fm-recipe", default="recipes/fm_toy.yaml", help="FM recipe (default recipes/fm_toy.yaml)")
    ap.add_argument("--meanflow-recipe", default="recipes/meanflow_toy.yaml",
                    help="MeanFlow recipe (default recipes/meanflow_toy.yaml); 'none' leaves MeanFlow out")
    ap.add_argument("--tvm-recipe", default="recipes/tvm_toy.yaml",
                    help="TVM recipe (default recipes/tvm_toy.yaml, at its own batch); 'none' leaves TVM out")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per chunk and side (default 50)")
    ap.add_argument("--warm", type=int, default=10, help="untimed steps per side first (default 10)")
    args = ap.parse_args()
    device = C.setup(args)
    extra = ["train.sample_every=1", "train.steps=1000000000"]  # on_samples after every step; never ends
    loops, tmp = {}, tempfile.TemporaryDirectory()
    kinds = [("fm", args.fm_recipe), ("imm", args.recipe), ("meanflow", args.meanflow_recipe),
             ("tvm", args.tvm_recipe)]
    kinds = [(k, path) for k, path in kinds if path != "none"]
    for kind, path in kinds:
        recipe, comps = C.load(path, device, args.batch, extra)
        p = bare_params(recipe, comps)
        print(f"{kind}: {path}, batch {recipe.train.batch_size}: {check_same(comps, p, device)}", flush=True)
        p.pop("target", None)  # the bare loop's EMA target starts from its own network
        loops[f"fw_{kind}"] = C.SteppedLoop(framework_loop(comps, Path(tmp.name) / kind), device, args.threads)
        loops[f"bare_{kind}"] = C.SteppedLoop(bare_loop(comps, p, device), device, args.threads)
    t = C.race_loops(loops, args, device, "side", tmp)
    for kind, _ in kinds:
        r = C.ratios(t[f"fw_{kind}"], t[f"bare_{kind}"])
        C.report_ratio(f"(a) {kind} framework / bare", r, "<= 1.05x", C.spread(r)[1] <= 1.05)
    mix = C.ratios(t["fw_imm"], t["fw_fm"])
    C.report_ratio("(b) IMM / FM, framework", mix, "<= 1.40x", C.spread(mix)[1] <= 1.40)
    C.report_ratio("(b) IMM / FM, bare (cost of the maths)", C.ratios(t["bare_imm"], t["bare_fm"]))
    if "fw_meanflow" in t:
        mf = C.ratios(t["fw_meanflow"], t["fw_fm"])
        C.report_ratio("(d) MeanFlow / FM, framework", mf, "<= 1.8x", C.spread(mf)[1] <= 1.8)
        C.report_ratio("(d) MeanFlow / FM, bare (torch.func.jvp)", C.ratios(t["bare_meanflow"], t["bare_fm"]))


if __name__ == "__main__":
    main()
