"""train.compile: the training forward runs through torch.compile's wrapper; checkpoints, the EMA
and an EMA target keep the plain module (no ``_orig_mod.`` prefixes)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from fewstep.api import train_recipe
from fewstep.networks.wrappers import unwrap
from fewstep.run.checkpoint import latest_checkpoint

RECIPE = """\
data: {{name: eight_gaussians}}
network: {{name: mlp, width: 16, depth: 1, emb_dim: 8}}
flowmap: {{parameterisation: euler_fm}}
objective: {{name: imm, group_size: 4, k: 8, target: ema}}
train: {{steps: 3, batch_size: 16, optimizer: adam, lr: 1e-3, log_every: 3, checkpoint_every: 3, compile: true}}
output: {{dir: {out}}}
"""


class Wrapped(torch.nn.Module):
    """Stands in for torch.compile's OptimizedModule (same ``_orig_mod`` attribute), counting calls."""

    calls = 0

    def __init__(self, mod):
        super().__init__()
        self._orig_mod = mod

    def forward(self, *args, **kwargs):
        Wrapped.calls += 1
        return self._orig_mod(*args, **kwargs)


def test_compile_wraps_the_training_forward_only(write, tmp_path, regs, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda mod, **kw: Wrapped(mod))
    run = train_recipe(write("c.yaml", RECIPE.format(out=tmp_path / "runs")), registries=regs, progress=False).run_dir
    assert Wrapped.calls == 3  # the online pass of each step; the EMA target is a plain copy
    keys = load_file(latest_checkpoint(run) / "model.safetensors").keys()
    assert keys and not any("_orig_mod" in k for k in keys)


def test_unwrap_finds_the_module_inside_compile_and_ddp_wrappers():
    net = torch.nn.Linear(2, 2)

    class DDPLike(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(Wrapped(DDPLike(net))) is net and unwrap(net) is net
