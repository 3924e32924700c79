"""The TVM loss (Zhou, Parger, Haque & Song 2025) as the official code computes it ([TVM] lumalabs/tvm @
82e8e5d, ``training/loss.py`` ``TVMLoss``, ``training/wrapper.py`` ``TVMWrapper.forward``/``get_dfds``;
docs/objectives.md §5.2). The paper's statement (§5.3) is UNVERIFIED beyond its abstract.

Per sample, with x ~ data, eps ~ N(0, sigma_d^2 I) and the flow map f(x_t, s, t) = x_t - sigma_d (t - s) G
(Euler-FM; TVM's f(x_t, t, s) = x_t + (s - t) k F, so k F = sigma_d G):

1. times (:func:`fewstep_tvm.times.sample_times`): gap l, terminal s <= 1 - l, start t = s + l, FM time s';
2. x_t = (1 - t) x + t eps and x_s' = (1 - s') x + s' eps with the same x and eps;
3. online, with gradients through primal AND tangent (reverse-over-forward): the terminal point
   f = f(x_t, s, t) and the terminal velocity df/ds, the JVP along (dx, ds, dt) = (0, 1, 0), and the FM
   velocity v_theta(x_s', s') = df/ds at s = t = s';
4. target, no gradient: v_tgt = v_EMA(sg f, s), the instantaneous velocity of an EMA network (decay 0.99,
   not the evaluation EMA) at the online model's own terminal point;
5. loss = mean_rows[ mean_D((beta (df/ds - v_tgt))^2) 1[s !~ t] + mean_D((beta (v_theta(x_s', s') - u_w))^2) ],
   u_w = eps - x (the interpolant's velocity) when w = 1, else w (eps - x) + (1 - w) v_EMA(x_s', s', null),
   beta = 1/w (w = 1 on rows whose label is the null class).

Passes per step, as the official code: a forward-mode pass of the B terminal rows with gradients (tangent
ds = 1), a plain forward of the B FM rows with gradients, one no-grad EMA pass (B rows, 2B with a guided
target), one backward; DDP synchronises the gradients of the two forwards in that one backward (tested).
``fused_pass: true`` runs both row sets in ONE forward-mode pass of 2B rows (the FM rows at s = t = s', whose
df/ds is the velocity): the same loss, but the FM rows then carry a tangent too, which costs more than the
plain forward it saves (bench/README.md). NaN rows are counted in the ``nan_rows`` log (the official code
zeroes them and only prints).

Differences from the official code, besides learned guidance (not built; see the package docstring):
fewstep's prior std is sigma_d (the official latents have std 1, so sigma_d = 1 reproduces it); the EMA
target is updated at the first loss call of each optimiser step, from the weights the previous step left,
which is what the official loop's update after each step amounts to, and it runs in eval mode as there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.errors import ConfigError
from fewstep.flowmap import FlowMap
from fewstep.interpolants import Interpolant, bcast
from fewstep.objectives import EMATarget
from fewstep_tvm.times import sample_times

Tensor = torch.Tensor


@dataclass
class Terms:
    """One evaluation of the TVM loss: the scalar, the per-row terms [B] and what they were built from."""

    loss: Tensor
    terminal: Tensor  # mean_D (beta (df/ds - v_tgt))^2, 0 where s ~ t
    fm: Tensor  # mean_D (beta (v_theta(x_s', s') - u_w))^2
    nan_rows: Tensor  # rows whose terminal + fm is NaN (zeroed in ``loss`` when zero_nan_rows)
    f: Tensor  # f(x_t, s, t), the online terminal point
    dfds: Tensor  # d f(x_t, s, t)/ds, the online terminal velocity
    v_target: Tensor  # v_EMA(sg f, s)
    v_fm: Tensor  # v_theta(x_s', s')
    u_target: Tensor  # u_w


def _cat(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return None if a is None else torch.cat([a, b])


class TVM:
    """Terminal Velocity Matching as a fewstep objective: ``loss(flowmap, batch, step)``."""

    def __init__(self, cfg, interpolant: Interpolant):
        self.cfg, self.ip = cfg, interpolant
        self._ema = EMATarget(cfg.target_ema_decay)

    # --- pieces, public so that tests can use them ----------------------------------------------------
    def times(self, n: int, device=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(s, t, s', l), float64 [n], with this config's logit-normal parameters."""
        cfg = self.cfg
        return sample_times(self.ip, n, cfg.gap_mean, cfg.gap_std, cfg.s_mean, cfg.s_std, device)

    def target_flowmap(self, fm: FlowMap, step: int) -> FlowMap:
        """The flow map around theta-bar, the EMA target ([TVM] training_loop.py ``ema_target``, decay
        ``ema_target_beta``): theta-bar <- d theta-bar + (1 - d) theta once per optimiser step (at its first
        shard; a copy of theta at the first call), in eval mode as the official teacher."""
        target = self._ema.flowmap(fm, step)
        target.net.eval()
        return target

    def online(self, fm: FlowMap, x_t: Tensor, s: Tensor, t: Tensor, x_sp: Tensor, s_prime: Tensor,
               cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(f(x_t, s, t), d f(x_t, s, t)/ds, v_theta(x_s', s')) with gradients through all three, the JVP's
        tangent included ([TVM] ``TVMWrapper.get_dfds`` with ``detach_jvp: false``: df/ds = k (F + (s - t)
        dF/ds), here sigma_d G - sigma_d (t - s) dG/ds from ``FlowMap.jvp`` along (0, 1, 0)).

        Two passes by default. Fused: one pass of 2B rows, [x_t at (s, t)] then [x_s' at (s', s')], all with
        tangent ds = 1. On the FM rows s = t, so df/ds there is the velocity ``FlowMap.velocity(x_s', s')`` (its
        definition; under Euler-FM sigma_d G(x_s', s', s'), the (t - s) dG/ds part being exactly 0)."""
        B = x_t.shape[0]
        if not self.cfg.fused_pass:
            out = fm.jvp(x_t, s, t, (0, 1, 0), cond)
            return out.f, out.df, fm.velocity(x_sp, s_prime, cond)
        with fm.augmented(_cat(fm.augment_labels, fm.augment_labels)):  # the FM rows are the same images
            out = fm.jvp(torch.cat([x_t, x_sp]), torch.cat([s, s_prime]), torch.cat([t, s_prime]), (0, 1, 0),
                         _cat(cond, cond))
        return out.f[:B], out.df[:B], out.df[B:]

    def guidance_weights(self, fm: FlowMap, cond: Tensor | None, like: Tensor) -> Tensor | None:
        """w per row: the configured w on labelled rows, 1 on null-class rows ([TVM] loss.py: dropped labels
        get beta = 1); None when unguided (w = 1)."""
        w = self.cfg.guidance
        if w == 1:
            return None
        if cond is None:
            raise ConfigError(f"objective.guidance: {w} needs labelled data (e.g. data.conditional: true); this "
                              "data set has no labels (use guidance: 1)")
        return torch.where(cond == fm.num_classes, 1.0, w).to(like.dtype)

    @torch.no_grad()
    def targets(self, target: FlowMap, f: Tensor, s: Tensor, x_sp: Tensor, s_prime: Tensor, u: Tensor,
                cond: Tensor | None, w: Tensor | None) -> tuple[Tensor, Tensor]:
        """(v_tgt, u_w) without gradients ([TVM] ``TVMWrapper.forward``): v_tgt = v_EMA(sg f, s, c) and the FM
        target u_w = w u + (1 - w) v_EMA(x_s', s', null), one EMA pass of 2B rows; u_w = u when unguided."""
        if w is None:
            return target.velocity(f.detach(), s, cond), u
        null = target.null_labels(cond)
        with target.augmented(_cat(target.augment_labels, target.augment_labels)):
            v = target.velocity(torch.cat([f.detach(), x_sp]), torch.cat([s, s_prime]), torch.cat([cond, null]))
        v_tgt, v_uncond = v.chunk(2)
        return v_tgt, bcast(w, u) * u + bcast(1 - w, u) * v_uncond.to(u.dtype)

    def terms(self, fm: FlowMap, target: FlowMap, x_t: Tensor, s: Tensor, t: Tensor, x_sp: Tensor,
              s_prime: Tensor, u: Tensor, cond: Tensor | None = None) -> Terms:
        """The TVM loss on given inputs (docs/objectives.md §5.2 steps 4-7): rows
        mean_D((beta (df/ds - v_tgt))^2) 1[s !~ t] + mean_D((beta (v_theta(x_s', s') - u_w))^2), batch mean.
        ``u`` is the conditional velocity of x_s' (eps - x under OT-FM); s ~ t is ``torch.isclose`` with its
        default tolerances, as the official code tests it. Residuals in float32 at least (the official
        loss is fp32 outside the bf16 network)."""
        acc = torch.promote_types(x_t.dtype, torch.float32)
        f, dfds, v_fm = self.online(fm, x_t, s, t, x_sp, s_prime, cond)
        w = self.guidance_weights(fm, cond, u)
        v_tgt, u_w = self.targets(target, f, s, x_sp, s_prime, u, cond, w)
        beta = torch.ones(x_t.shape[0], dtype=acc, device=x_t.device) if w is None else (1 / w).to(acc)

        d_terminal = bcast(beta, dfds) * (dfds.to(acc) - v_tgt.to(acc))
        d_fm = bcast(beta, v_fm) * (v_fm.to(acc) - u_w.to(acc))
        terminal, fm_rows = (d.pow(2).flatten(1).mean(1) for d in (d_terminal, d_fm))
        nan = torch.isnan(terminal + fm_rows)
        if self.cfg.zero_nan_rows:
            # zero the residuals, not only the rows: a NaN target would otherwise give 0 * NaN gradients
            keep = (~nan).reshape((-1,) + (1,) * (d_terminal.ndim - 1))
            d_terminal, d_fm = (torch.where(keep, d, torch.zeros_like(d)) for d in (d_terminal, d_fm))
            terminal, fm_rows = (d.pow(2).flatten(1).mean(1) for d in (d_terminal, d_fm))
        terminal = torch.where(torch.isclose(s, t), torch.zeros_like(terminal), terminal)
        rows = terminal + fm_rows
        return Terms(rows.mean(), terminal, fm_rows, nan.sum(), f, dfds, v_tgt, v_fm, u_w)

    # --- the loss -------------------------------------------------------------------------------------
    def loss(self, fm: FlowMap, batch, step: int):
        """One step's loss. Random draws in this order: times (:meth:`times`), the noise eps, label dropout."""
        x, ip = batch.x, self.ip
        s, t, s_prime, _ = (v.to(x.dtype) for v in self.times(x.shape[0], x.device))
        noise = ip.prior(tuple(x.shape), device=x.device, dtype=x.dtype)
        cond = fm.drop_labels(batch.cond, self.cfg.label_dropout)
        x_t = ip.interpolate(x, noise, t)
        x_sp = ip.interpolate(x, noise, s_prime)  # the same x and eps ([TVM] loss.py yt, ys_prime)
        u = ip.velocity(x, noise, s_prime)  # eps - x under OT-FM
        out = self.terms(fm, self.target_flowmap(fm, step), x_t, s, t, x_sp, s_prime, u, cond)
        logs = {"terminal_loss": torch.nan_to_num(out.terminal.detach()).mean(),
                "fm_loss": torch.nan_to_num(out.fm.detach()).mean(),
                "nan_rows": out.nan_rows.to(torch.float32)}
        return out.loss, logs

    # --- state (the EMA target), checkpointed by the training loop ------------------------------------
    def state_dict(self) -> dict:
        return self._ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._ema.load_state_dict(state)
