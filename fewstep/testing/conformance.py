"""The conformance kit: what every registered component must do, checked on tiny inputs.

Each ``check_<kind>(entry, config=None)`` builds the component from its registry entry (with its
Config's defaults, or ``config`` for the fields that have none) and raises ``AssertionError`` with a
message naming the component when it breaks the contract of ``fewstep.hookspecs``:

- every Config forbids unknown fields, validates with its defaults and describes every field;
- interpolants: data at t = 0 (alpha 1, sigma 0), derivatives and eta/lambda consistent with alpha
  and sigma, eta_inv(eta(t)) = t, prior std sigma_d, DDIM(x_t, x, t, t) = x_t;
- networks: ``net(x, t, s, cond)`` keeps x's shape, and s changes the output;
- kernels (stationary): a symmetric Gram matrix [G, M, M] whose diagonal is k at distance 0;
- objectives: the loss is a finite scalar with gradients, its logs are numbers;
- samplers: a descending grid from T to eps; the flow map is called exactly NFE times; shapes kept;
  the same seed gives the same samples;
- datasets: seeded, shaped, labelled as declared, overall std about sigma_d;
- metrics: a set is closer to a fresh draw of its distribution than to a shifted one;
- loggers: the Logger members, and a whole session (start, scalars, a grid PNG, eval results, finish) in a
  temporary run directory without an error.

The checks need torch; they run in seconds on a CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from fewstep.protocols import (
    Dataset,
    GroupedTimes,
    HasExample,
    HasExampleSections,
    HasExampleShape,
    ImageData,
    Kernel,
    Logger,
    Metric,
    Objective,
    Sampler,
    Stateful,
)
from fewstep.registry import KINDS, SINGULAR, Entry, resolve
from fewstep.testing.doubles import backbone_inputs

_F64 = torch.float64


def _who(entry: Entry) -> str:
    return f"{SINGULAR[entry.kind]} '{entry.name}' (plugin '{entry.plugin}')"


def _assert(ok: bool, entry: Entry, msg: str) -> None:
    if not ok:
        raise AssertionError(f"{_who(entry)}: {msg}")


def conformance_cases(registries=None, *, plugin: str | None = None, kinds=KINDS) -> list:
    """Every registered component (of one plugin, of some kinds) as ``pytest.param``s with ids
    ``kind:name``, for ``@pytest.mark.parametrize("entry", conformance_cases(...))``."""
    import pytest

    if registries is None:
        from fewstep.plugins import load_registries

        registries = load_registries(warn=False)  # FEWSTEP_PLUGINS counts: an uninstalled plugin can be checked
    return [pytest.param(e, id=f"{kind}:{e.name}") for kind in kinds for e in registries.kind(kind)
            if plugin is None or e.plugin == plugin]


def check_config(entry: Entry, config: dict[str, Any] | None = None) -> BaseModel:
    """The entry's Config: unknown fields refused, defaults (plus ``config``) valid, every field
    described, a description and a resolvable factory. Returns the validated Config."""
    _assert(isinstance(entry.description, str) and entry.description.strip() != "", entry, "no description")
    _assert(callable(resolve(entry.factory)), entry, f"factory {entry.factory!r} is not callable")
    model = entry.model()
    try:
        cfg = model.model_validate({**(config or {}), "name": entry.name})
    except ValidationError as exc:
        raise AssertionError(f"{_who(entry)}: its Config does not validate with its defaults"
                             f"{' and ' + str(config) if config else ''}: {exc}") from None
    try:
        model.model_validate({**(config or {}), "name": entry.name, "no_such_field_xyz": 1})
        raise AssertionError(f"{_who(entry)}: its Config accepts unknown fields (derive from ComponentConfig)")
    except ValidationError as exc:
        _assert(any(e["type"] == "extra_forbidden" for e in exc.errors()), entry,
                "an unknown field was refused for another reason")
    bare = [k for k, f in entry.config.model_fields.items() if not (f.description or "").strip()]
    _assert(not bare, entry, f"fields without a description: {', '.join(bare)}")
    return cfg


def check_interpolant(entry: Entry, config: dict[str, Any] | None = None) -> None:
    ip = entry.build(check_config(entry, config))
    t = torch.linspace(0.1, 0.9, 9, dtype=_F64)
    zero, h = torch.zeros(1, dtype=_F64), 1e-6
    _assert(torch.allclose(ip.alpha(zero), torch.ones(1, dtype=_F64)) and torch.allclose(ip.sigma(zero), zero),
            entry, "t = 0 must be the data: alpha_0 = 1, sigma_0 = 0")
    _assert(bool((ip.sigma(t)[1:] > ip.sigma(t)[:-1]).all()), entry, "sigma_t must increase (noise grows with t)")
    for name, fn, d in (("alpha", ip.alpha, ip.d_alpha), ("sigma", ip.sigma, ip.d_sigma), ("lambda", ip.lam, ip.d_lam)):
        fd = (fn(t + h) - fn(t - h)) / (2 * h)
        _assert(torch.allclose(d(t), fd, rtol=1e-5, atol=1e-6), entry, f"d_{name} disagrees with finite differences")
    _assert(torch.allclose(ip.eta(t), ip.sigma(t) / ip.alpha(t)), entry, "eta_t must be sigma_t / alpha_t")
    _assert(torch.allclose(ip.eta_inv(ip.eta(t)), t, atol=1e-9), entry, "eta_inv(eta(t)) != t")
    _assert(torch.allclose(ip.lam(t), 2 * torch.log(ip.alpha(t) / ip.sigma(t))), entry,
            "lambda_t must be log(alpha_t^2 / sigma_t^2)")
    z = ip.prior((20000, 2), torch.Generator().manual_seed(0))
    _assert(abs(z.std().item() / ip.sigma_d - 1) < 0.03, entry, "the prior's std must be sigma_d")
    x, x_t = torch.randn(4, 3, dtype=_F64), torch.randn(4, 3, dtype=_F64)
    tt = torch.full((4,), 0.5, dtype=_F64)
    _assert(torch.allclose(ip.ddim(x_t, x, tt, tt), x_t), entry, "DDIM(x_t, x, t, t) must be x_t")


def check_network(entry: Entry, config: dict[str, Any] | None = None, shape: tuple[int, ...] | None = None) -> None:
    """``shape``: one sample's shape the backbone accepts; default: its Config's ``example_shape``
    ClassVar, else (2,) (an image network declares e.g. ``example_shape = (3, 8, 8)``)."""
    from fewstep.networks import NetworkSpec

    shape = tuple(shape or (entry.config.example_shape if isinstance(entry.config, HasExampleShape) else (2,)))
    torch.manual_seed(0)
    net = entry.build(check_config(entry, config), NetworkSpec(tuple(shape), num_classes=3, second_time=True))
    x, t, s = backbone_inputs(4, shape, seed=0)
    cond = torch.tensor([0, 1, 2, 3])  # 3 = the null class
    with torch.no_grad():
        out = net(x, t, s, cond)
        _assert(out.shape == x.shape, entry, f"output shape {tuple(out.shape)} != input shape {tuple(x.shape)}")
        _assert(bool(torch.isfinite(out).all()), entry, "non-finite output")
        if torch.equal(net(x, t, s * 0.5, cond), out):  # e.g. a zero-initialised output layer
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
            out = net(x, t, s, cond)
        _assert(not torch.equal(net(x, t, s * 0.5, cond), out), entry, "the second time s does not change the output")
        if isinstance(net, GroupedTimes) and net.grouped_times:  # in float64: a deep net amplifies float32 rounding
            net, x, t, s = net.double(), x.double(), t.double(), s.double()
            grouped = net(x, t[::2], s[::2], cond)
            per_sample = net(x, t[::2].repeat_interleave(2), s[::2].repeat_interleave(2), cond)
            _assert(torch.allclose(grouped, per_sample, rtol=1e-4, atol=1e-5), entry,
                    "declares grouped_times but [B/2] times differ from the same times repeated")


def check_kernel(entry: Entry, config: dict[str, Any] | None = None) -> None:
    k = entry.build(check_config(entry, config))
    _assert(isinstance(k, Kernel), entry, "a kernel is called as kernel(a, b, w)")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 4, generator=g, dtype=_F64), torch.randn(3, 5, 4, generator=g, dtype=_F64)
    w = torch.rand(3, generator=g, dtype=_F64) + 0.5
    K = k(a, a, w)
    _assert(K.shape == (3, 5, 5), entry, f"Gram of [3, 5, 4] particles has shape {tuple(K.shape)}, not [3, 5, 5]")
    _assert(bool(torch.isfinite(K).all()), entry, "non-finite Gram matrix")
    _assert(torch.allclose(K, K.transpose(1, 2)), entry, "k(a, a) is not symmetric")
    _assert(torch.allclose(k(a, b, w), k(b, a, w).transpose(1, 2)), entry, "k(a, b) != k(b, a)^T")
    k0 = k(a[:, :1] * 0, a[:, :1] * 0, w)[:, 0, 0]
    _assert(torch.allclose(torch.diagonal(K, dim1=1, dim2=2), k0[:, None].expand(3, 5)), entry,
            "the diagonal of k(a, a) is not the kernel at distance 0")


def check_sampler(entry: Entry, config: dict[str, Any] | None = None) -> None:
    from fewstep.flowmap import FlowMap
    from fewstep.interpolants import OTFM
    from fewstep.networks.mlp import MLP
    from fewstep.samplers import generate

    sampler = entry.build(check_config(entry, config))
    _assert(isinstance(sampler, Sampler), entry, "a sampler has a name, schedule(interpolant, n) and is called as "
                                                 "sampler(flowmap, x, ts, cond, generator) (fewstep.protocols.Sampler)")
    torch.manual_seed(0)
    rows = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = MLP((2,), width=16, depth=1, emb_dim=8)

        def forward(self, x, t, s=None, cond=None):
            rows.append(x.shape[0])
            return self.inner(x, t, s, cond)

    ip = OTFM(0.5)
    fm = FlowMap(Counting(), ip, "euler_fm", "s")
    for steps in (1, 2, 3, 5):
        ts = sampler.schedule(ip, steps)
        _assert(ts.shape == (steps + 1,) and bool((ts[1:] < ts[:-1]).all()), entry,
                f"the {steps}-step grid must be {steps + 1} descending times")
        _assert(abs(float(ts[0]) - ip.T) < 1e-6 and abs(float(ts[-1]) - ip.eps) < 1e-6, entry,
                f"the {steps}-step grid must run from T = {ip.T} to eps = {ip.eps}")
        rows.clear()
        x, nfe = generate(fm, sampler, steps, 8, (2,), generator=torch.Generator().manual_seed(1))
        _assert(x.shape == (8, 2) and bool(torch.isfinite(x).all()), entry, f"{steps} steps: bad samples")
        _assert(sum(rows) == nfe * 8 and nfe >= 1, entry,
                f"{steps} steps: reported NFE {nfe} but the backbone saw {sum(rows) / 8:g} evaluations per sample")
        again, _ = generate(fm, sampler, steps, 8, (2,), generator=torch.Generator().manual_seed(1))
        _assert(torch.equal(x, again), entry, f"{steps} steps: the same seed gave different samples")


def tiny_recipe(registries=None, **sections):
    """A small valid recipe (8 Gaussians, 16-wide MLP, Euler-FM, FM, batch 16) with ``sections``
    replaced, e.g. ``tiny_recipe(objective={"name": "imm", "group_size": 4})``."""
    from fewstep.config import recipe_from_dict

    data = {"data": {"name": "eight_gaussians"}, "network": {"name": "mlp", "width": 16, "depth": 1, "emb_dim": 8},
            "flowmap": {"parameterisation": "euler_fm"}, "objective": {"name": "fm"},
            "train": {"steps": 10, "batch_size": 16, "optimizer": "adam", "lr": 1e-3, "threads": 1}}
    data.update(sections)
    return recipe_from_dict(data, registries, path="<tiny recipe>")


def check_objective(entry: Entry, config: dict[str, Any] | None = None, registries=None, **sections) -> None:
    """The loss on one batch of a :func:`tiny_recipe` (``sections`` replace its data, network...).
    ``registries`` must hold the objective (default: the installed plugins and FEWSTEP_PLUGINS)."""
    from fewstep.plugins import get_registries
    from fewstep.run.components import build_components

    check_config(entry, config)
    regs = registries or get_registries()
    if isinstance(entry.config, HasExampleSections):  # e.g. sCT needs TrigFlow's interpolant and flow map
        sections = {**entry.config.example_sections, **sections}
    comps = build_components(tiny_recipe(regs, objective={**(config or {}), "name": entry.name}, **sections), regs)
    _assert(isinstance(comps.objective, Objective), entry, "an objective has loss(flowmap, batch, step)")
    batch = comps.dataset.sample(16, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    out = comps.objective.loss(comps.flowmap, batch, 0)
    _assert(isinstance(out, tuple) and len(out) == 2, entry, "loss must return (loss, logs)")
    loss, logs = out
    _assert(torch.is_tensor(loss) and loss.ndim == 0, entry, "the loss must be a 0-d tensor")
    _assert(bool(torch.isfinite(loss)), entry, f"the loss is {loss.item()}")
    _assert(loss.requires_grad, entry, "the loss does not depend on the network (no gradient)")
    loss.backward()
    grads = [p.grad for p in comps.net.parameters() if p.grad is not None]
    _assert(bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads), entry, "missing or non-finite gradients")
    _assert(any(bool(g.abs().sum() > 0) for g in grads), entry, "all gradients are zero")
    _assert(isinstance(logs, dict), entry, "logs must be a dict")
    for key, v in logs.items():
        ok = isinstance(v, (int, float)) or (torch.is_tensor(v) and v.ndim == 0)
        _assert(ok and bool(torch.isfinite(torch.as_tensor(v))), entry,
                f"log {key!r} must be a finite number or 0-d tensor")
    if isinstance(comps.objective, Stateful):
        comps.objective.load_state_dict(comps.objective.state_dict())


def check_dataset(entry: Entry, config: dict[str, Any] | None = None, sigma_d: float = 0.5) -> None:
    """``config`` defaults to what the Config's ``example(folder)`` classmethod returns (it may write small
    files into a temporary folder first; :class:`fewstep.protocols.HasExample`), else its defaults. Data
    that is not on this machine (:class:`fewstep.errors.MissingResource`, e.g. CIFAR-10 never downloaded)
    is skipped with its message; every other error fails the check."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fewstep-example-") as folder:
        if config is None and isinstance(entry.config, HasExample):
            config = entry.config.example(Path(folder))
        _check_dataset(entry, config, sigma_d)


def _check_dataset(entry: Entry, config: dict[str, Any] | None, sigma_d: float) -> None:
    import pytest

    from fewstep.errors import MissingResource

    cfg = check_config(entry, config)
    try:
        ds = entry.build(cfg, sigma_d)
    except MissingResource as exc:
        pytest.skip(f"{_who(entry)}: {exc}")
    _assert(isinstance(ds, Dataset), entry, "a dataset has kind, shape, num_classes and sample(n, generator) "
                                            "(fewstep.protocols.Dataset)")
    _assert(ds.kind in ("points", "images"), entry, f"kind must be 'points' or 'images', not {ds.kind!r}")
    _assert(ds.kind == "points" or isinstance(ds, ImageData), entry, "an image dataset has to_uint8(x)")
    a = ds.sample(64, torch.Generator().manual_seed(0))
    b = ds.sample(64, torch.Generator().manual_seed(0))
    _assert(tuple(a.x.shape) == (64, *ds.shape) and a.x.is_floating_point(), entry,
            f"sample(64) gave {tuple(a.x.shape)} {a.x.dtype}, not float (64, *{tuple(ds.shape)})")
    _assert(torch.equal(a.x, b.x), entry, "the same generator seed gave different data")
    if ds.num_classes:
        _assert(a.cond is not None and a.cond.shape == (64,) and not a.cond.is_floating_point(), entry,
                "labelled data must give integer labels of shape [n]")
        _assert(bool(((a.cond >= 0) & (a.cond < ds.num_classes)).all()), entry, "labels outside [0, num_classes)")
    else:
        _assert(a.cond is None, entry, "unlabelled data (num_classes None) must give cond None")
    std = ds.sample(4096, torch.Generator().manual_seed(1)).x.std().item()
    _assert(0.8 < std / sigma_d < 1.25, entry, f"overall std {std:.3g} is not about sigma_d = {sigma_d}")
    if ds.kind == "images":
        u8 = ds.to_uint8(a.x)  # pixels, or a VAE's decoding of latents (another shape than x)
        _assert(u8.dtype == torch.uint8 and u8.ndim == 4 and u8.shape[0] == 64 and u8.shape[1] in (1, 3), entry,
                f"to_uint8 must give uint8 images [64, 1 or 3, H, W], not {u8.dtype} {tuple(u8.shape)}")


def check_metric(entry: Entry, config: dict[str, Any] | None = None) -> None:
    """Point metrics on 2D Gaussians; image metrics on the bundled digits (skipped, with the reason,
    when they need weights that are not on this machine: :class:`fewstep.errors.MissingResource`)."""
    import pytest

    from fewstep.errors import MissingResource

    m = entry.build(check_config(entry, config))
    _assert(isinstance(m, Metric), entry, "a metric has kind ('points' or 'images') and is called as "
                                          "metric(samples, reference, generator) (fewstep.protocols.Metric)")
    _assert(m.kind in ("points", "images"), entry, f"kind must be 'points' or 'images', not {m.kind!r}")
    g = torch.Generator().manual_seed(0)
    if m.kind == "images":
        from fewstep.data.images import digits_pixels

        x = (digits_pixels()[0] * 255).round().to(torch.uint8)
        far = torch.randint(0, 256, (400, *x.shape[1:]), generator=g, dtype=torch.uint8)
        same, other = x[:400], x[400:800]
    else:
        same, other = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g)
        far = other + 3.0
    try:
        near_v, far_v = m(same, other, g), m(same, far, g)
    except MissingResource as exc:
        pytest.skip(f"{_who(entry)}: {exc}")
    near_v, far_v = (v if isinstance(v, dict) else {entry.name: v} for v in (near_v, far_v))
    for key in near_v:
        _assert(all(isinstance(v, float) for v in (near_v[key], far_v[key])), entry, f"{key} is not a float")
        _assert(near_v[key] < far_v[key], entry,
                f"{key}: a fresh draw ({near_v[key]:.4g}) is not closer than a shifted set ({far_v[key]:.4g})")


def check_logger(entry: Entry, config: dict[str, Any] | None = None) -> None:
    """One logging session in a temporary run directory, as the training loop and ``fewstep eval`` call it."""
    import tempfile

    from PIL import Image

    from fewstep.run.tracking import RunInfo

    logger = entry.build(check_config(entry, config))
    _assert(isinstance(logger, Logger), entry, "a logger has start, scalars, image, results and finish "
                                               "(fewstep.protocols.Logger)")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "group" / "run"
        run_dir.mkdir(parents=True)
        png = run_dir / "grid.png"
        Image.new("RGB", (8, 8), (200, 10, 10)).save(png)
        recipe = {"objective": {"name": "fm"}, "train": {"steps": 2, "lr": 1e-3}}
        logger.start(RunInfo(run_dir, "group", "group/run", recipe, 2, 0))
        logger.scalars(1, {"step": 1, "loss": 0.5, "lr": 1e-3})
        logger.image(2, "samples", png)
        logger.results("eval", [{"steps": 1, "nfe": 1, "seconds": 0.1, "sw2": 0.25}], 2)
        logger.finish("finished")


_CHECKS = {"interpolants": check_interpolant, "networks": check_network, "kernels": check_kernel,
           "objectives": check_objective, "samplers": check_sampler, "datasets": check_dataset,
           "metrics": check_metric, "loggers": check_logger}


def check_component(entry: Entry, config: dict[str, Any] | None = None, **kwargs) -> None:
    """Run the checks of ``entry``'s kind (Config checks included); ``kwargs`` go to that check
    (``shape=`` for networks, ``registries=`` and recipe sections for objectives)."""
    _CHECKS[entry.kind](entry, config, **kwargs)
