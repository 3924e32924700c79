"""diffusers' UNet2DModel as a fewstep backbone ``net(x, t, s, cond)`` for images [B, C, H, W].

The second time input s enters the way IMM builds it (App. I.1): its own sinusoidal projection and
MLP, summed with t's embedding. UNet2DModel provides exactly that as ``class_embed_type="timestep"``
(the "class labels" slot goes through the shared ``time_proj`` and a second ``TimestepEmbedding``).
Class labels then need a slot of their own: a label table whose embedding is added to s's, in the
module that replaces ``class_embedding`` (it receives the labels just before the forward call).

Times arrive as float tensors already scaled by the flow map's ``time_scale`` (1000): a Python float
would be truncated to an integer by UNet2DModel (diffusers turns a non-tensor timestep into an integer
tensor before embedding it).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fewstep.networks import NetworkSpec


class _Timesteps(nn.Module):
    """diffusers' ``Timesteps`` (flip_sin_to_cos, shift 0, what UNet2DModel builds) computed in float64 and
    returned in the network's dtype: the float32 phases of 1000 t lose about 1e-4 each, and the t-derivative
    a JVP takes through them (MeanFlow, sCT, TVM) inherits that. No parameters, so checkpoints are unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("like", torch.empty(0), persistent=False)  # follows .double() / .to(device)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
        args = t.to(torch.float64)[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.channels % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb.to(self.like.dtype)


class _SAndLabel(nn.Module):
    """emb(s) + emb(label): replaces UNet2DModel's ``class_embedding`` when both are used."""

    def __init__(self, s_embedding: nn.Module, num_classes: int, dim: int):
        super().__init__()
        self.s_embedding = s_embedding
        self.labels = nn.Embedding(num_classes + 1, dim)  # + the null class of label dropout / CFG
        self.current: torch.Tensor | None = None

    def forward(self, s_proj: torch.Tensor) -> torch.Tensor:
        return self.s_embedding(s_proj) + self.labels(self.current)


class UNet(nn.Module):
    """UNet2DModel with ``channels`` per level (``attention`` marks the levels with self-attention)."""

    grouped_times = False  # UNet2DModel wants one time per sample (or one for the batch)

    def __init__(self, spec: NetworkSpec, channels=(128, 256, 256, 256), attention=(False, True, False, False),
                 layers_per_block: int = 2, dropout: float = 0.1, norm_groups: int = 32, head_dim: int | None = None):
        super().__init__()
        from diffusers import UNet2DModel

        if len(spec.shape) != 3 or spec.shape[1] != spec.shape[2]:
            raise ValueError(f"the unet network needs square images [C, H, W]; the data has shape {spec.shape}")
        if len(attention) != len(channels):
            raise ValueError(f"network.attention needs one flag per level ({len(channels)}), got {len(attention)}")
        c, h, _ = spec.shape
        if h % 2 ** (len(channels) - 1):
            raise ValueError(f"images of {h} pixels cannot be halved {len(channels) - 1} times (network.channels)")
        self.num_classes, self.second_time = spec.num_classes, spec.second_time
        labels_only = spec.num_classes is not None and not spec.second_time
        self.unet = UNet2DModel(
            sample_size=h, in_channels=c, out_channels=c, block_out_channels=tuple(channels),
            layers_per_block=layers_per_block, dropout=dropout, norm_num_groups=norm_groups,
            attention_head_dim=head_dim,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            class_embed_type="timestep" if spec.second_time else None,
            num_class_embeds=spec.num_classes + 1 if labels_only else None,
        )
        self.unet.time_proj = _Timesteps(channels[0])
        if spec.second_time and spec.num_classes is not None:
            dim = self.unet.time_embedding.linear_2.out_features
            self.unet.class_embedding = _SAndLabel(self.unet.class_embedding, spec.num_classes, dim)

    def forward(self, x, t, s=None, cond=None):
        if self.num_classes is not None and cond is None:
            cond = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)  # null class
        extra = None
        if self.second_time:
            if s is None:
                raise ValueError("this network was built with a second time input; pass s")
            extra = s.to(x.dtype)
            if self.num_classes is not None:
                self.unet.class_embedding.current = cond
        elif self.num_classes is not None:
            extra = cond
        return self.unet(x, t.to(x.dtype), class_labels=extra).sample


def build_unet(cfg, spec: NetworkSpec) -> UNet:
    return UNet(spec, tuple(cfg.channels), tuple(cfg.attention), cfg.layers_per_block, cfg.dropout,
                cfg.norm_groups, cfg.head_dim)
