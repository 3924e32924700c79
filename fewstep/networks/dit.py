"""A Diffusion Transformer (DiT) backbone ``net(x, t, s, cond)`` for images [B, C, H, W].

Written from the description in Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"
(DiT): the image is cut into p x p patches, each linearly embedded and given a fixed 2D sin-cos
position embedding (§3.1 "Patchify"); N transformer blocks with adaLN-Zero follow (§3.1 "DiT block
design"): a conditioning vector c regresses per block the shift, scale and gate of the attention and
MLP branches, from a zero-initialised linear map, so every block starts as the identity; a final
adaptive LayerNorm and a zero-initialised linear layer give p * p * C values per token, which are
rearranged back to the image (§3.1 "Transformer decoder").

As in IMM (Zhou et al. 2025, App. I.1), c = emb(t) + emb(s) + emb(label): s has its own sinusoidal
features and MLP, summed with t's, and the label table has an extra null class for guidance (see
:class:`~fewstep.networks.embeddings.Conditioning`). Labels are never dropped here; the objective
does that. There is no learned variance: the output has the input's channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.networks import DIT_SIZES, NetworkSpec
from fewstep.networks.embeddings import Conditioning

Tensor = torch.Tensor


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos position embedding [grid * grid, dim] (DiT §3.1, after ViT and MAE).

    The first half of the channels encodes the column, the second half the row (the convention of the
    MAE and DiT reference code, which the released IMM DiTs store), each as [sin(p w_k), cos(p w_k)] with
    w_k = 10000^(-k / (dim/4)). Tokens are numbered row by row, like :meth:`DiT.patchify`.
    """
    if dim % 4:
        raise ValueError(f"the 2D position embedding needs hidden divisible by 4, got {dim}")
    w = 1.0 / 10_000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def one(p: Tensor) -> Tensor:
        a = p.reshape(-1, 1) * w[None]
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)

    return torch.cat([one(cols), one(rows)], dim=1).float()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, one (shift, scale) per sample broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """One DiT block with adaLN-Zero (DiT Fig. 3, left): for each of the attention and MLP branches,
    x + gate * branch(modulate(LayerNorm(x), shift, scale)), with (shift, scale, gate) x 2 regressed
    from c by a zero-initialised linear layer (so the block is the identity at initialisation)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(width, hidden), nn.Dropout(dropout))  # (timm's Mlp: dropout after both)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def attention(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift, scale from c) and a zero-initialised linear map to p * p * C per token (DiT §3.1)."""

    def __init__(self, hidden: int, patch: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, patch * patch * channels)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """DiT (Peebles & Xie 2023) of ``depth`` blocks of width ``hidden`` with ``heads`` attention heads
    on ``patch`` x ``patch`` patches; :data:`fewstep.networks.DIT_SIZES` holds the paper's S/B/L/XL.

    Called as ``net(x, t, s, cond)`` with x [B, C, H, W] (the square shape of ``spec``), t and s of
    shape [B] or one time per group of consecutive samples ([G], G dividing B), and integer labels
    cond [B] (None: the null class). Returns [B, C, H, W]; exactly zero at initialisation (adaLN-Zero).
    """

    grouped_times = True  # t and s may be [G] for groups of B/G samples (see FlowMap._net_times)

    def __init__(self, spec: NetworkSpec, hidden: int, depth: int, heads: int, patch: int = 2,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if len(spec.shape) != 3 or spec.shape[1] != spec.shape[2]:
            raise ValueError(f"the dit network needs square images [C, H, W]; the data has shape {spec.shape}")
        c, h, _ = spec.shape
        if h % patch:
            raise ValueError(f"images of {h} pixels cannot be cut into {patch}x{patch} patches (network.patch)")
        if hidden % heads:
            raise ValueError(f"network.hidden ({hidden}) must be divisible by network.heads ({heads})")
        self.channels, self.patch, self.grid = c, patch, h // patch
        self.embed = nn.Conv2d(c, hidden, patch, stride=patch)  # a linear map of each flattened patch
        # a frozen parameter, as in DiT's and IMM's code: it is in the state dict (and the parameter count)
        self.pos_embed = nn.Parameter(sincos_2d(hidden, self.grid)[None], requires_grad=False)
        # DiT: 256 frequencies, computed in float64 as in its reference code
        self.cond = Conditioning(hidden, spec.second_time, spec.num_classes, freq_dim=256, features_dtype=torch.float64)
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp_ratio, dropout) for _ in range(depth))
        self.final = FinalLayer(hidden, patch, c)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DiT §3.1: ViT's initialisation (Xavier-uniform linears, zero biases; the patch embedding like
        a linear layer) and zeros for every adaLN regression and the output layer, so each block starts
        as the identity and the output as 0; N(0, 0.02) for the t, s and label embeddings, as IMM's DiT
        initialises its s branch like its t branch (docs/imm.md §3)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.embed.weight.view(self.embed.weight.shape[0], -1))
        nn.init.zeros_(self.embed.bias)
        for emb in (self.cond.t_embed, self.cond.s_embed):
            if emb is not None:
                for layer in (emb.mlp[0], emb.mlp[2]):
                    nn.init.normal_(layer.weight, std=0.02)
        if self.cond.label_embed is not None:
            nn.init.normal_(self.cond.label_embed.weight, std=0.02)
        for layer in [b.ada[1] for b in self.blocks] + [self.final.ada[1], self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> tokens [B, (H/p)(W/p), hidden], row by row, plus the position embedding."""
        return self.embed(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)

    def unpatchify(self, y: Tensor) -> Tensor:
        """Tokens [B, N, p * p * C] -> [B, C, H, W] (DiT §3.1 "Transformer decoder")."""
        b, g, p, c = y.shape[0], self.grid, self.patch, self.channels
        return y.view(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        c = self.cond(t, s, cond, x.shape[0]).to(x.dtype)
        h = self.patchify(x)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final(h, c))


def dit_dims(cfg) -> tuple[int, int, int]:
    """(hidden, depth, heads): cfg.size's row of :data:`~fewstep.networks.DIT_SIZES`, with cfg.hidden, depth
    and heads overriding."""
    base = DIT_SIZES[cfg.size] if cfg.size is not None else (None, None, None)
    dims = tuple(v if v is not None else b for v, b in zip((cfg.hidden, cfg.depth, cfg.heads), base))
    if None in dims:
        raise ValueError("network.size is null: give network.hidden, network.depth and network.heads")
    return dims  # type: ignore[return-value]


def build_dit(cfg, spec: NetworkSpec) -> DiT:
    hidden, depth, heads = dit_dims(cfg)
    return DiT(spec, hidden, depth, heads, cfg.patch, cfg.mlp_ratio, cfg.dropout)

