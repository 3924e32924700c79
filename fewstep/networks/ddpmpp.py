"""DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
App. H), as EDM re-implements it ("SongUNet", Karras et al. 2022, App. F.2, Table 7) and IMM trains it on
CIFAR-10 (Zhou, Ermon & Song 2025, Table 5, App. I.1): ``net(x, t, s, cond)`` for images [B, C, H, W].

Written from the papers; the official code (NVlabs/edm, lumalabs/imm) was read for the tensor names and
shapes only, which this module keeps, so that a released checkpoint's state dict maps onto it one to one
(``fewstep import-checkpoint``). At IMM's CIFAR-10 size (128 channels, multipliers (2, 2, 2), 4 blocks
per level, attention at 16 x 16) it has 56,061,443 parameters: EDM's DDPM++ (55,732,739) plus the
second time's embedding MLP (328,704); ``augment_dim: 9`` adds 1,152.

- Embedding. t (c_noise = 1000 t) gets sinusoidal features [sin(t w_k), cos(t w_k)], w_k =
  10000^(-k/(n/2 - 1)), k = 0..n/2-1 (n = 128, the highest frequency exactly 1/10000), to which a
  label's and the augmentation labels' linear maps are added; then Linear - SiLU - Linear to 512. IMM's
  second time s has the same features and its own two-layer MLP, and the two are summed (App. I.1);
  SiLU of the sum conditions every block.
- Blocks. GroupNorm (min(32, C/4) groups, eps 1e-6) - SiLU - 3x3 conv (with 2x down/upsampling by a
  2 x 2 box filter) - plus a linear map of the embedding - GroupNorm - SiLU - dropout - 3x3 conv
  (initialised near zero, 1e-5 times Xavier); a 1 x 1 skip conv where the shape changes; the sum
  scaled by sqrt(1/2). With attention, one head over all positions follows, its residual scaled by
  sqrt(1/2) again. Every weight is Xavier-uniform, biases zero; the attention's qkv weight is scaled
  by sqrt(0.2).
- Encoder: a 3x3 conv to the base channels; per level (a down block, then) ``num_blocks`` blocks.
  Decoder: at the lowest resolution two blocks (the first with attention); per level (an up block,
  then) ``num_blocks + 1`` blocks on the channel-concatenated encoder outputs; the last block of a
  level in ``attn_resolutions`` has attention. Output: GroupNorm - SiLU - 3x3 conv (near-zero).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.networks import NetworkSpec
from fewstep.networks.attention import softmax
from fewstep.networks.embeddings import full_precision

Tensor = torch.Tensor
SKIP_SCALE = math.sqrt(0.5)  # DDPM++ scales every residual sum by sqrt(1/2) (Song et al. 2021, App. H)


def positional(t: Tensor, channels: int, max_positions: float = 10_000.0) -> Tensor:
    """[sin(t w_k), cos(t w_k)] with w_k = max_positions^(-k / (channels/2 - 1)), k = 0..channels/2 - 1:
    DDPM++'s timestep features (EDM's 'endpoint' positional embedding, sin first), computed in float64."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float64, device=t.device) / (half - 1))
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1).to(t.dtype if t.is_floating_point() else torch.float32)


def _xavier(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """Xavier-uniform weight times ``scale``, zero bias (EDM's init_mode 'xavier_uniform')."""
    nn.init.xavier_uniform_(module.weight)
    with torch.no_grad():
        module.weight.mul_(scale)
    if getattr(module, "bias", None) is not None:  # (nn.Linear(bias=False) has bias None)
        nn.init.zeros_(module.bias)
    return module


class Conv(nn.Conv2d):
    """A k x k conv (k = 1 or 3, 'same' padding), optionally preceded by 2x down- or upsampling with a
    2 x 2 box filter per channel (DDPM++'s resample filter [1, 1]), kept as the buffer
    ``resample_filter`` as in the released checkpoints."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, up: bool = False, down: bool = False,
                 scale: float = 1.0):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        _xavier(self, scale)
        self.up, self.down = up, down
        if up or down:
            f = torch.ones(2)
            self.register_buffer("resample_filter", (f.outer(f) / f.sum() ** 2)[None, None])

    def forward(self, x: Tensor) -> Tensor:
        if self.up or self.down:
            f = self.resample_filter.to(x.dtype).tile(x.shape[1], 1, 1, 1)
            if self.up:  # transposed box filter of stride 2: each pixel becomes a 2 x 2 block
                x = F.conv_transpose2d(x, f * 4, groups=x.shape[1], stride=2)
            else:  # 2 x 2 average
                x = F.conv2d(x, f, groups=x.shape[1], stride=2)
        return super().forward(x)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class Block(nn.Module):
    """A DDPM++ residual block (see the module docstring), optionally down/up-sampling, optionally with
    one-head self-attention."""

    def __init__(self, c_in: int, c_out: int, emb: int, *, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels, self.dropout = c_in, c_out, dropout
        self.norm0 = _norm(c_in)
        self.conv0 = Conv(c_in, c_out, 3, up=up, down=down)
        self.affine = _xavier(nn.Linear(emb, c_out))
        self.norm1 = _norm(c_out)
        self.conv1 = Conv(c_out, c_out, 3, scale=1e-5)
        self.skip = Conv(c_in, c_out, 1, up=up, down=down) if (c_in != c_out or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = _norm(c_out)
            self.qkv = Conv(c_out, 3 * c_out, 1, scale=math.sqrt(0.2))
            self.proj = Conv(c_out, c_out, 1, scale=1e-5)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * SKIP_SCALE
        if self.attention:
            b, c, hh, ww = x.shape
            # qkv channels are interleaved (q_0, k_0, v_0, q_1, ...), as in the released checkpoints
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, hh * ww).unbind(2)
            wide = torch.promote_types(q.dtype, torch.float32)  # EDM's float32 softmax; float64 stays float64
            w = softmax(torch.einsum("ncq,nck->nqk", q.to(wide), k.to(wide) / math.sqrt(c)), dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", w, v).reshape(b, c, hh, ww)
            x = (self.proj(a) + x) * SKIP_SCALE
        return x


class DDPMpp(nn.Module):
    """DDPM++ with IMM's second time input; called as ``net(x, t, s, cond, augment_labels=None)``.

    ``cond`` holds integer labels with ``num_classes`` as the null class, which maps to the zero label
    vector (EDM's label dropout); ``augment_labels`` [B, augment_dim] are the augmentation pipeline's
    (None, as at sampling, adds nothing).
    """

    grouped_times = True  # each distinct (t, s) is embedded once, then repeated over its group

    def __init__(self, spec: NetworkSpec, model_channels: int = 128, channel_mult=(2, 2, 2), num_blocks: int = 4,
                 attn_resolutions=(16,), dropout: float = 0.2, channel_mult_emb: int = 4, augment_dim: int = 0):
        super().__init__()
        if len(spec.shape) != 3 or spec.shape[1] != spec.shape[2]:
            raise ValueError(f"the ddpmpp network needs square images [C, H, W]; the data has shape {spec.shape}")
        c, res, _ = spec.shape
        if res % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"images of {res} pixels cannot be halved {len(channel_mult) - 1} times "
                             "(network.channel_mult)")
        noise, emb = model_channels, model_channels * channel_mult_emb
        self.noise_channels, self.num_classes = noise, spec.num_classes
        self.map_label = _xavier(nn.Linear(spec.num_classes, noise)) if spec.num_classes else None
        self.map_augment = _xavier(nn.Linear(augment_dim, noise, bias=False)) if augment_dim else None
        self.map_layer0, self.map_layer1 = _xavier(nn.Linear(noise, emb)), _xavier(nn.Linear(emb, emb))
        self.second_time = spec.second_time
        if spec.second_time:  # IMM App. I.1: s gets its own embedding MLP, added to t's
            self.map_layer0_s, self.map_layer1_s = _xavier(nn.Linear(noise, emb)), _xavier(nn.Linear(emb, emb))

        self.enc = nn.ModuleDict()
        cout, skips = c, []
        for level, mult in enumerate(channel_mult):
            r = res >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{r}x{r}_down"] = Block(cout, cout, emb, down=True, dropout=dropout)
            skips.append(cout)
            for i in range(num_blocks):
                self.enc[f"{r}x{r}_block{i}"] = Block(cout, model_channels * mult, emb, attention=r in attn_resolutions,
                                                      dropout=dropout)
                cout = model_channels * mult
                skips.append(cout)
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            r = res >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{r}x{r}_in0"] = Block(cout, cout, emb, attention=True, dropout=dropout)
                self.dec[f"{r}x{r}_in1"] = Block(cout, cout, emb, dropout=dropout)
            else:
                self.dec[f"{r}x{r}_up"] = Block(cout, cout, emb, up=True, dropout=dropout)
            for i in range(num_blocks + 1):
                attention = i == num_blocks and r in attn_resolutions
                self.dec[f"{r}x{r}_block{i}"] = Block(cout + skips.pop(), model_channels * mult, emb,
                                                      attention=attention, dropout=dropout)
                cout = model_channels * mult
        self.dec[f"{res}x{res}_aux_norm"] = _norm(cout)
        self.dec[f"{res}x{res}_aux_conv"] = Conv(cout, c, 3, scale=1e-5)

    def _time(self, t: Tensor, layer0: nn.Linear, layer1: nn.Linear, extra: Tensor | None = None) -> Tensor:
        h = positional(t, self.noise_channels).to(layer0.weight.dtype)
        if extra is not None:
            h = h + extra
        return layer1(F.silu(layer0(h)))

    def embedding(self, t: Tensor, s: Tensor | None, cond: Tensor | None, augment_labels: Tensor | None,
                  n: int) -> Tensor:
        """SiLU(MLP(pos(t) + label + augment) + MLP_s(pos(s))) for n samples; t and s may be grouped."""
        def per_sample(v: Tensor) -> Tensor:
            return v if v.shape[0] == n else v.repeat_interleave(n // v.shape[0], dim=0)

        extra = None
        if self.map_label is not None:
            labels = cond if cond is not None else torch.full((n,), self.num_classes, device=t.device)
            one_hot = F.one_hot(labels.long(), self.num_classes + 1)[:, :self.num_classes]  # the null class -> 0
            extra = self.map_label(one_hot.to(self.map_label.weight.dtype) * math.sqrt(self.num_classes))
        if self.map_augment is not None and augment_labels is not None:
            aug = self.map_augment(augment_labels.to(self.map_augment.weight.dtype))
            extra = aug if extra is None else extra + aug
        if extra is None:
            emb = per_sample(self._time(t, self.map_layer0, self.map_layer1))
        else:
            emb = self._time(per_sample(t), self.map_layer0, self.map_layer1, extra)
        if self.second_time:
            if s is None:
                raise ValueError("this network was built with a second time input; pass s")
            emb = emb + per_sample(self._time(s, self.map_layer0_s, self.map_layer1_s))
        return F.silu(emb)

    def forward(self, x: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        with full_precision(t):  # the noise and label mapping in float32 under autocast
            emb = self.embedding(t, s, cond, augment_labels, x.shape[0])
        emb = emb.to(x.dtype)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, Block) else block(x)
            skips.append(x)
        out = None
        for name, block in self.dec.items():
            if name.endswith("aux_norm"):
                out = F.silu(block(x))
            elif name.endswith("aux_conv"):
                out = block(out)
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


def build_ddpmpp(cfg, spec: NetworkSpec) -> DDPMpp:
    return DDPMpp(spec, cfg.model_channels, tuple(cfg.channel_mult), cfg.num_blocks, tuple(cfg.attn_resolutions),
                  cfg.dropout, cfg.channel_mult_emb, cfg.augment_dim)
