"""A short TVM training run beats the untrained model at one step (and at two): the untrained map is the
identity plus a small G, whose samples are the prior N(0, sigma_d^2 I), already of the data's scale."""
from __future__ import annotations

import torch

from fewstep.eval.toy_metrics import sliced_wasserstein2
from fewstep.run.components import build_components
from fewstep.samplers import Pushforward, generate
from fewstep.testing import tiny_recipe


def test_a_short_run_beats_the_untrained_model(regs):
    recipe = tiny_recipe(regs, objective={"name": "tvm"},
                         network={"name": "mlp", "width": 64, "depth": 2, "emb_dim": 32},
                         interpolant={"name": "ot_fm", "eps": 0.0, "T": 1.0},
                         flowmap={"parameterisation": "euler_fm", "second_time": "stride", "time_scale": 1.0})
    comps = build_components(recipe, regs)
    fm, obj, data = comps.flowmap, comps.objective, comps.dataset
    reference = data.sample(2048, torch.Generator().manual_seed(1)).x

    def sw2(steps: int) -> float:
        with torch.no_grad():
            x, _ = generate(fm, Pushforward("uniform"), steps, 2048, data.shape,
                            generator=torch.Generator().manual_seed(2))
        return float(sliced_wasserstein2(x, reference, generator=torch.Generator().manual_seed(3)))

    before = [sw2(1), sw2(2)]
    opt = torch.optim.Adam(comps.net.parameters(), lr=1e-2)
    for step in range(400):
        torch.manual_seed(step)
        loss, logs = obj.loss(fm, data.sample(128, torch.Generator().manual_seed(10_000 + step)), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert logs["nan_rows"] == 0
    after = [sw2(1), sw2(2)]
    # measured: SW2 0.167 -> 0.116 at 1 step, 0.168 -> 0.102 at 2 steps (400 steps of batch 128; FM needs more
    # than 300 steps of this network to beat the prior at 1 step at all: 0.47)
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1], (before, after)
