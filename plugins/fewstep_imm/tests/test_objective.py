"""The IMM loss: its reduction to CT with one particle, gradient flow, zero at the solution, RNG and
label handling, the EMA target, recipe errors, and a short training run."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.base import Batch
from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import OTFM
from fewstep.testing import ProbeNet, RecordingFlowMap, rng_draws
from fewstep_imm import IMMConfig
from fewstep_imm.objective import IMM

D64 = torch.float64


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)  # times, noise and label dropout draw from the global RNG


def imm(**kw):
    ip = OTFM(0.5)
    return IMM(IMMConfig(**kw), ip), ip


def data(n=64, seed=1):
    return 0.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=D64)


def test_one_particle_with_the_energy_kernel_is_consistency_training_with_l2():
    """IMM Lemma 1 / App. G.1: M = 1, k = -w~^2 ||a - b||^2 / D gives w(t) 2 w~^2 ||y - y~||^2 / D."""
    obj, ip = imm(group_size=1, kernel="energy", a=1, b=4)
    fm = RecordingFlowMap(ProbeNet(), ip, "euler_fm", "s")
    x = data()
    loss, _ = obj.loss(fm, Batch(x), 0)
    online, target = fm.f_calls
    s, t, r = online["s"], online["t"], target["t"]
    assert torch.equal(target["s"], s) and (r >= s).all() and (r < t).all()
    # x_r reuses the noise of x_t: x_r = alpha_r x + sigma_r eps
    eps = (online["x_t"] - (1 - t)[:, None] * x) / t[:, None]
    assert torch.allclose(target["x_t"], (1 - r)[:, None] * x + r[:, None] * eps)
    w = torch.sigmoid(4 - 2 * torch.log((1 - t) / t)) * (1 - t) / (t * (1 - t) * ((1 - t) ** 2 + t**2))
    w_tilde = 1 / (0.5 * (t - s))
    ct = (w * 2 * w_tilde**2 * (online["out"] - target["out"]).pow(2).sum(1) / 2).mean()
    assert torch.allclose(loss, ct, rtol=1e-10)


def ot_fm_weight(t, a, b):
    """IMM Eq. 13 under OT-FM, written out: w(t) = 1/2 sigmoid(b - lambda_t) (-d lambda/dt) alpha_t^a /
    (alpha_t^2 + sigma_t^2) with alpha_t = 1 - t, sigma_t = t, lambda_t = 2 log(alpha_t / sigma_t) and
    -d lambda/dt = 2 / (t (1 - t))."""
    alpha, sigma = 1 - t, t
    lam = 2 * torch.log(alpha / sigma)
    minus_dlam = 2 / (t * (1 - t))
    return 0.5 * torch.sigmoid(b - lam) * minus_dlam * alpha**a / (alpha**2 + sigma**2)


def ot_fm_bandwidth(parameterisation, s, t, sigma_d=0.5):
    """w~(s, t) = 1 / |c_out(s, t)| (IMM §4.2, App. C.8) in closed form under OT-FM: Euler-FM
    c_out = -sigma_d (t - s); Simple-EDM c_out = -sigma_d (alpha_s sigma_t - sigma_s alpha_t) /
    sqrt(alpha_t^2 + sigma_t^2)."""
    if parameterisation == "euler_fm":
        c_out = -sigma_d * (t - s)
    else:
        a_s, s_s, a_t, s_t = 1 - s, s, 1 - t, t
        c_out = -sigma_d * (a_s * s_t - s_s * a_t) / torch.sqrt(a_t**2 + s_t**2)
    return 1 / c_out.abs()


def laplace_mmd2_by_loops(y, y_tilde, w_tilde):
    """IMM Eq. 67 with the Laplace kernel of §4.2 / App. C.8, one pair at a time: per group g
    (1/M^2) sum_{j,m} [k(y_j, y_m) + k(y~_j, y~_m) - 2 k(y_j, y~_m)], k(a, b) = exp(-w~ max(||a - b||, 1e-8) / D).
    y, y_tilde: [G, M, D] (differentiable: torch scalars only); returns [G].

    max(||a - b||, 1e-8) is taken as sqrt(max(||a - b||^2, 1e-16)) (the same number) so that the
    gradient at a = b is 0, not 0 * inf."""
    G, M, D = y.shape

    def k(a, b, w):
        sq = sum((a[e] - b[e]) ** 2 for e in range(D))
        return torch.exp(-w * torch.sqrt(torch.clamp(sq, min=1e-16)) / D)

    out = []
    for g in range(G):
        total = 0.0
        for j in range(M):
            for m in range(M):
                total = total + (k(y[g, j], y[g, m], w_tilde[g]) + k(y_tilde[g, j], y_tilde[g, m], w_tilde[g])
                                 - 2 * k(y[g, j], y_tilde[g, m], w_tilde[g]))
        out.append(total / M**2)
    return torch.stack(out)


@pytest.mark.parametrize("parameterisation, a, b", [("euler_fm", 1.0, 5.0), ("simple_edm", 2.0, 4.0)])
def test_multi_particle_loss_is_the_weighted_laplace_mmd_in_closed_form(parameterisation, a, b):
    """IMM Eq. 12-13, 67 with M = 4 particles of D = 3 elements: loss = mean over groups of w(t) MMD^2,
    the biased V-statistic with the Laplace kernel exp(-w~ ||a - b|| / D) (§4.2, App. C.8; D, sqrt(D)
    and D^2 all differ), the bandwidth w~ = 1/|c_out(s, t)| and the weight w(t) of Eq. 13, all written
    out for OT-FM and computed pair by pair from what the flow map recorded."""
    M, D, B = 4, 3, 32
    obj, ip = imm(group_size=M, a=a, b=b)
    fm = RecordingFlowMap(ProbeNet(D), ip, parameterisation, "s")
    x = 0.5 * torch.randn(B, D, generator=torch.Generator().manual_seed(1), dtype=D64)
    loss, logs = obj.loss(fm, Batch(x), 0)
    online, target = fm.f_calls
    G = B // M
    s, t, r = online["s"].reshape(G, M), online["t"].reshape(G, M), target["t"].reshape(G, M)
    # one (s, r, t) per group; the target pass is f(x_r, s, r) with r in [s, t) and x_r on the same noise
    assert (s == s[:, :1]).all() and (t == t[:, :1]).all() and (r == r[:, :1]).all()
    assert torch.equal(target["s"], online["s"]) and (r >= s).all() and (r < t).all()
    eps = (online["x_t"] - (1 - online["t"])[:, None] * x) / online["t"][:, None]
    assert torch.allclose(target["x_t"], (1 - target["t"])[:, None] * x + target["t"][:, None] * eps)
    s, t = s[:, 0], t[:, 0]
    y, y_tilde = online["out"].detach().reshape(G, M, D), target["out"].reshape(G, M, D)
    mmd = laplace_mmd2_by_loops(y, y_tilde, ot_fm_bandwidth(parameterisation, s, t))
    expected = (ot_fm_weight(t, a, b) * mmd).mean()
    assert (mmd > 0).all()
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    assert torch.allclose(logs["mmd2"], mmd.mean(), rtol=1e-10, atol=0)


def test_gradients_reach_only_the_online_branch():
    """IMM §4.1 'Stop gradient' with Eq. 12, 67: the loss equals the closed-form weighted Laplace MMD^2
    (Eq. 13 weight, 1/|c_out| bandwidth, written out) with the target as a constant, and has its gradient."""
    obj, ip = imm(group_size=4)
    net = ProbeNet()
    fm = RecordingFlowMap(net, ip, "simple_edm", "s")
    loss, _ = obj.loss(fm, Batch(data()), 0)
    assert [c["grad"] for c in net.calls] == [True, False]
    online, target = fm.f_calls
    assert not target["out"].requires_grad
    # the same loss with the target as a constant has the same gradient
    y, y_tilde = online["out"].reshape(16, 4, 2), target["out"].detach().reshape(16, 4, 2)
    t, s = online["t"][::4], online["s"][::4]
    again = (ot_fm_weight(t, 1.0, 5.0) * laplace_mmd2_by_loops(y, y_tilde, ot_fm_bandwidth("simple_edm", s, t))).mean()
    assert torch.allclose(loss, again, rtol=1e-10, atol=0)
    g1 = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)
    g2 = torch.autograd.grad(again, list(net.parameters()))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-10, atol=0)
        assert a.abs().sum() > 0


class Constant(torch.nn.Module):
    def __init__(self, point):
        super().__init__()
        self.point = torch.nn.Parameter(point.clone())

    def forward(self, x, t, s=None, cond=None):
        return self.point.expand_as(x)


@pytest.mark.parametrize("kernel", ["laplace", "rbf", "energy"])
def test_loss_is_zero_when_the_two_particle_sets_are_identical(kernel):
    # data = a point mass x0 and g = x0 exactly: f(x_t, s, t) = DDIM(x_t, x0, s, t) = alpha_s x0 + sigma_s eps
    # on both branches, so the two particle sets coincide and the V-statistic MMD is 0.
    x0 = torch.tensor([0.3, -0.7], dtype=D64)
    obj, ip = imm(group_size=4, kernel=kernel)
    batch = Batch(x0.expand(64, 2).clone())
    loss, _ = obj.loss(FlowMap(Constant(x0), ip, "identity", "s"), batch, 0)
    assert abs(loss.item()) < 1e-12
    wrong, _ = obj.loss(FlowMap(Constant(x0 + 0.2), ip, "identity", "s"), batch, 0)
    assert wrong.item() > 1e-6


@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_two_forward_passes_per_step_whatever_m(m):
    obj, ip = imm(group_size=m)
    fm = FlowMap(ProbeNet(), ip, "euler_fm", "s")
    obj.loss(fm, Batch(data()), 0)
    assert fm.nfe == 2


def test_groups_share_times_and_particles_do_not_share_noise():
    obj, ip = imm(group_size=4)
    fm = RecordingFlowMap(ProbeNet(), ip, "euler_fm", "s")
    x = data()
    obj.loss(fm, Batch(x), 0)
    t = fm.f_calls[0]["t"].reshape(16, 4)
    assert (t == t[:, :1]).all() and t[:, 0].unique().numel() == 16
    eps = (fm.f_calls[0]["x_t"] - (1 - fm.f_calls[0]["t"])[:, None] * x) / fm.f_calls[0]["t"][:, None]
    assert eps.unique(dim=0).shape[0] == 64


def test_group_size_must_divide_the_batch():
    obj, ip = imm(group_size=4)
    with pytest.raises(ConfigError, match=r"objective.group_size: 4 must divide the per-device batch \(10\)"):
        obj.loss(FlowMap(ProbeNet(), ip, "euler_fm", "s"), Batch(data(10)), 0)


@pytest.mark.parametrize("shared", [True, False])
def test_shared_dropout_replays_the_rng_for_the_target_pass(shared):
    obj, ip = imm(shared_dropout=shared)
    online, target = rng_draws(obj, ip, Batch(data()))
    assert (online == target) is shared


@pytest.mark.parametrize("labels", ["same", "clean"])
def test_label_dropout_uses_the_null_class(labels):
    obj, ip = imm(label_dropout=0.5, target_labels=labels)
    net = ProbeNet(num_classes=10)
    cond = torch.arange(512) % 10
    obj.loss(FlowMap(net, ip, "euler_fm", "s", num_classes=10), Batch(data(512), cond), 0)
    online, target = net.calls[0]["cond"], net.calls[1]["cond"]
    dropped = online == 10
    assert 0.4 < dropped.double().mean() < 0.6
    assert torch.equal(online[~dropped], cond[~dropped])
    assert torch.equal(target, online if labels == "same" else cond)


def test_ema_target_follows_the_weights_and_round_trips_through_state_dict():
    obj, ip = imm(target="ema", target_ema_decay=0.9)
    net = ProbeNet()
    fm = FlowMap(net, ip, "euler_fm", "s")
    obj.loss(fm, Batch(data()), 0)
    first = {k: v.clone() for k, v in obj.state_dict()["target"].items()}
    assert torch.equal(first["A"], net.A.detach())
    with torch.no_grad():
        net.A.add_(1.0)
    obj.loss(fm, Batch(data()), 1)
    assert torch.allclose(obj.state_dict()["target"]["A"], 0.9 * first["A"] + 0.1 * net.A.detach())
    fresh, _ = imm(target="ema", target_ema_decay=0.9)
    fresh.load_state_dict(obj.state_dict())
    fresh.loss(fm, Batch(data()), 2)  # loads the saved target, then takes one EMA step
    expected = 0.9 * obj.state_dict()["target"]["A"] + 0.1 * net.A.detach()
    assert torch.allclose(fresh.state_dict()["target"]["A"], expected)
    assert imm()[0].state_dict() == {}  # the default target is the online network: no state


# --- recipes and the CLI ---------------------------------------------------------------------
RECIPE = """\
data: {name: eight_gaussians}
network: {name: mlp, width: 64, depth: 3, emb_dim: 32}
flowmap: {parameterisation: euler_fm}
objective: {name: imm, group_size: 4, k: 10}
train: {steps: 10, batch_size: 64, optimizer: adam, lr: 1e-3}
"""


@pytest.mark.slow
def test_short_training_run_improves_one_step_sw2(write, tmp_path, regs):
    from fewstep.api import evaluate_run, train_recipe

    # IMM learns short jumps first and the 1-step map by induction: measured 0.169 -> 0.175 at 400
    # steps, 0.076 at 800 (1-step SW2, 2048 samples)
    text = RECIPE.replace("steps: 10, batch_size: 64", "steps: 800, batch_size: 256, ema_decay: 0.95, log_every: 100, "
                          "checkpoint_every: 800, grad_clip: 1.0")
    text += "eval: {steps: [1], reference_steps: null, n_samples: 2048, metrics: [sw2]}\n"
    text += f"output: {{dir: {tmp_path}}}\n"
    path = write("imm_short.yaml", text)
    first = train_recipe(path, registries=regs, progress=False, stop_after=1)
    before = evaluate_run(first.run_dir, regs, write=False)["rows"][0]["sw2"]
    train_recipe(path, registries=regs, progress=False)
    after = evaluate_run(first.run_dir, regs, write=False)["rows"][0]["sw2"]
    assert after < 0.6 * before, (before, after)


def test_resume_with_an_ema_target_is_exact(write, tmp_path, regs):
    from safetensors.torch import load_file

    from fewstep.api import train_recipe
    from fewstep.run.checkpoint import latest_checkpoint

    text = RECIPE.replace("k: 10}", "k: 10, target: ema, target_ema_decay: 0.9}").replace(
        "steps: 10,", "steps: 40, checkpoint_every: 20,") + f"output: {{dir: {tmp_path}}}\n"
    straight = train_recipe(write("a.yaml", text), registries=regs, progress=False)
    path = write("b.yaml", text)
    first = train_recipe(path, registries=regs, progress=False, stop_after=20)
    resumed = train_recipe(path, registries=regs, progress=False)
    assert first.end_step == 20 and resumed.start_step == 20 and resumed.run_dir == first.run_dir
    a = load_file(str(latest_checkpoint(straight.run_dir) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(resumed.run_dir) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the checkpointed EMA target theta- is the uninterrupted run's, bit for bit
    ema_a = torch.load(latest_checkpoint(straight.run_dir) / "state.pt", weights_only=True)["objective"]["target"]
    ema_b = torch.load(latest_checkpoint(resumed.run_dir) / "state.pt", weights_only=True)["objective"]["target"]
    assert set(ema_b) == set(a) and set(ema_a) == set(ema_b)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert not all(torch.equal(ema_b[k], b[k]) for k in ema_b)  # theta- is not the online weights


def test_groups_below_small_gap_use_the_small_gap_kernel():
    """small_gap: groups with t - s below it are matched with small_gap_kernel, the others with the kernel;
    the loss is the weighted mean of those per-group MMD^2 (computed here with each kernel separately)."""
    from fewstep.kernels import RBF, Laplace, mmd2

    M, D, B = 4, 3, 64
    obj, ip = imm(group_size=M, small_gap=0.3, small_gap_kernel={"name": "rbf"})
    fm = RecordingFlowMap(ProbeNet(D), ip, "euler_fm", "s")
    x = 0.5 * torch.randn(B, D, generator=torch.Generator().manual_seed(1), dtype=D64)
    loss, logs = obj.loss(fm, Batch(x), 0)
    online, target = fm.f_calls
    G = B // M
    s, t = online["s"].reshape(G, M)[:, 0], online["t"].reshape(G, M)[:, 0]
    y, y_tilde = online["out"].detach().reshape(G, M, D), target["out"].reshape(G, M, D)
    w_tilde = ot_fm_bandwidth("euler_fm", s, t)
    small = (t - s) < 0.3
    assert small.any() and (~small).any()
    mmd = torch.where(small, mmd2(RBF(), y, y_tilde, w_tilde), mmd2(Laplace(), y, y_tilde, w_tilde))
    assert torch.allclose(logs["mmd2"], mmd.mean(), rtol=1e-10, atol=0)
    assert torch.allclose(loss, (ot_fm_weight(t, 1.0, 5.0) * mmd).mean(), rtol=1e-10, atol=0)
    assert not torch.allclose(mmd, mmd2(Laplace(), y, y_tilde, w_tilde))


def test_the_small_gap_options_are_checked_against_the_flow_map(regs):
    from fewstep.config import recipe_from_dict
    from fewstep.errors import RecipeError

    base = {"data": "eight_gaussians", "network": "mlp", "flowmap": {"parameterisation": "simple_edm"},
            "objective": {"name": "imm", "bandwidth_min_gap": 0.2}}
    with pytest.raises(RecipeError, match="bandwidth_min_gap: caps w~"):
        recipe_from_dict(base, regs)
    ok = recipe_from_dict({**base, "flowmap": {"parameterisation": "euler_fm"}}, regs)
    assert ok.objective.bandwidth_min_gap == 0.2 and ok.objective.small_gap_kernel.name == "rbf"
