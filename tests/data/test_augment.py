"""EDM's augmentation pipe (fewstep/data/augment.py): p = 0 is the identity, the 9 labels describe the transform
(re-applying it to the original reproduces the augmented image), each label means what it says, and the
labels reach the network on every pass of a training step and are absent at sampling."""
from __future__ import annotations

import math

import pytest
import torch

from fewstep.data.augment import LABELS, augment, draw_labels, transform


def smooth_images(n=4, c=3, size=16, seed=0):
    """Band-limited images (a few low-frequency waves): resampling them changes little, so a geometric
    transform can be compared with its exact pixel counterpart."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    out = torch.zeros(n, c, size, size)
    for _ in range(3):
        fx, fy, phase = (torch.rand(n, c, 1, 1, generator=g) * v for v in (0.6, 0.6, 2 * math.pi))
        out += torch.sin(fx * x + fy * y + phase) / 3
    return out


def labels(n=4, **values):
    """The same labels for n images."""
    lab = torch.zeros(n, LABELS)
    for i, key in enumerate(("xflip", "yflip", "scale", "cos_1", "sin", "aniso_c", "aniso_s", "tx", "ty")):
        lab[:, i] = values.get(key, 0.0)
    return lab


def test_probability_zero_is_the_identity_with_zero_labels():
    x = torch.randn(5, 3, 8, 8)
    out, lab = augment(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and torch.equal(lab, torch.zeros(5, LABELS))


def test_the_labels_describe_the_transform():
    """The pipeline is non-leaking because the labels tell the network what was done: re-applying the
    transform the labels describe to the original images gives the augmented ones exactly."""
    x = torch.rand(32, 3, 16, 16) * 2 - 1
    out, lab = augment(x, 0.9, torch.Generator().manual_seed(3))
    assert (lab[:, 2:] != 0).any(dim=1).float().mean() > 0.5  # the geometric part was exercised
    assert torch.equal(transform(x, lab), out)


def test_each_label_means_its_transform():
    x = smooth_images()
    assert torch.equal(transform(x, labels(xflip=1)), x.flip(3))
    assert torch.equal(transform(x, labels(yflip=1)), x.flip(2))
    # a translation of exactly 2 pixels to the right (label 1 = 0.125 of the width), away from the border
    moved = transform(x, labels(tx=2 / (16 * 0.125)))
    assert torch.allclose(moved[..., 4:12, 4:12], x[..., 4:12, 2:10], atol=0.02)
    # a quarter turn (labels cos t - 1 = -1, sin t = 1) is torch.rot90 by +1 (interior; the turned grid falls
    # between the 2x-upsampled samples, so the Symlet-6 interpolation error of these waves shows: 0.035)
    turned = transform(x, labels(cos_1=-1.0, sin=1.0))
    error = [(turned - torch.rot90(x, k, dims=(2, 3)))[..., 3:13, 3:13].abs().max() for k in (1, 3)]
    assert error[0] < 0.05 and error[1] > 0.5
    # scaling by 2^(0.2 w): w = 5 doubles the size; the centre pixel stays, a pixel 2 out lands 4 out
    big = transform(x, labels(scale=5.0))
    assert torch.allclose(big[..., 7:9, 7:9].mean((2, 3)), x[..., 7:9, 7:9].mean((2, 3)), atol=0.05)
    # anisotropic scaling in a frame turned by r is the same as with -w in the frame turned by r + 90 degrees
    w, r = 2.0, 0.3
    a = transform(x, labels(aniso_c=w * math.cos(2 * r), aniso_s=w * math.sin(2 * r)))
    b = transform(x, labels(aniso_c=-w * math.cos(2 * (r + math.pi / 2)), aniso_s=-w * math.sin(2 * (r + math.pi / 2))))
    assert torch.allclose(a, b, atol=1e-5)


def test_probabilities_follow_edm():
    """x-flip on every image once p > 0 (EDM's multiplier 1e8), half of them flipped; every other transform with
    probability p."""
    lab = draw_labels(20000, 0.12, torch.Generator().manual_seed(0))
    assert abs(lab[:, 0].mean().item() - 0.5) < 0.02
    assert abs((lab[:, 2] != 0).float().mean().item() - 0.12) < 0.01  # scaling
    assert abs((lab[:, 4] != 0).float().mean().item() - 0.12) < 0.01  # rotation
    assert abs((lab[:, 7] != 0).float().mean().item() - 0.12) < 0.01  # translation
    assert abs(lab[:, 1].mean().item() - 0.06) < 0.01  # y-flip: chosen with p, then half


class Recorder(torch.nn.Module):
    """A backbone that records the augmentation labels of each call."""

    grouped_times = False

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, t, s=None, cond=None, augment_labels=None):
        self.seen.append(augment_labels)
        return x * self.w


def test_labels_reach_both_imm_passes_and_are_absent_at_sampling():
    from fewstep.data.base import Batch
    from fewstep.flowmap import FlowMap
    from fewstep.interpolants import OTFM
    from fewstep.samplers import Pushforward, generate
    from fewstep_imm import IMMConfig
    from fewstep_imm.objective import IMM

    net = Recorder()
    fm = FlowMap(net, OTFM(0.5), "euler_fm", "s")
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    out, lab = augment(x, 0.5, torch.Generator().manual_seed(0))
    with fm.augmented(lab):
        IMM(IMMConfig(group_size=4), OTFM(0.5)).loss(fm, Batch(out, None, lab), 0)
    assert len(net.seen) == 2 and all(torch.equal(s, lab) for s in net.seen)  # online and target pass
    net.seen.clear()
    generate(fm, Pushforward(), 2, 8, (3, 8, 8))
    assert net.seen == [None, None]
    with fm.augmented(lab), pytest.raises(ValueError, match="part of its batch"):
        fm.f(x[:4], 0.1, 0.5)


def test_an_augmented_recipe_trains_with_labels_into_the_network(write, tmp_path, regs):
    from fewstep.api import train_recipe

    recipe = write("r.yaml", f"""\
data: {{name: digits, size: 16, augment: 0.5}}
network: {{name: ddpmpp, model_channels: 16, channel_mult: [1, 2], num_blocks: 1, attn_resolutions: [8],
          dropout: 0.0, augment_dim: 9}}
flowmap: {{parameterisation: simple_edm}}
objective: {{name: imm, group_size: 4}}
train: {{steps: 2, batch_size: 8, optimizer: adam, lr: 1e-3, log_every: 1, threads: 1}}
eval: {{steps: [1], reference_steps: null, n_samples: 8, metrics: [energy]}}
output: {{dir: {tmp_path}}}
""")
    result = train_recipe(recipe, registries=regs, progress=False)
    assert result.end_step == 2
    from fewstep.run.records import read_metrics

    assert all(r["loss"] == r["loss"] for r in read_metrics(result.run_dir))  # finite
