"""An MLP backbone for low-dimensional data (2D toy sets)."""
from __future__ import annotations

import math

import torch
from torch import nn

from fewstep.networks import NetworkSpec
from fewstep.networks.embeddings import Conditioning


class MLP(nn.Module):
    """x and the (t, s, label) embedding are concatenated, then ``depth`` SiLU layers of ``width``.

    Called as ``net(x, t, s, cond)`` with x of shape [B, *shape]; returns the same shape.
    """

    def __init__(self, shape: tuple[int, ...], width: int = 256, depth: int = 4, emb_dim: int = 128,
                 second_time: bool = True, num_classes: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.cond = Conditioning(emb_dim, second_time, num_classes)
        layers: list[nn.Module] = []
        fan_in = d + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.SiLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, d))
        self.body = nn.Sequential(*layers)

    grouped_times = True  # t and s may be [G] for groups of B/G samples (see FlowMap._net_times)

    def forward(self, x, t, s=None, cond=None):
        emb = self.cond(t, s, cond, x.shape[0])
        h = torch.cat([x.flatten(1), emb.to(x.dtype)], dim=1)
        return self.body(h).view(x.shape)


def build_mlp(cfg, spec: NetworkSpec) -> MLP:
    return MLP(spec.shape, cfg.width, cfg.depth, cfg.emb_dim, spec.second_time, spec.num_classes, cfg.dropout)
