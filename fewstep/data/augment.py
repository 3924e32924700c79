"""EDM's non-leaking geometric augmentation (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", App. F.2; the pipeline of ADA, Karras et al. 2020, §2.3).

Each image is transformed with probability ``p`` per transform, and the transform's parameters, as 9
numbers, condition the network (``augment_dim: 9``); at sampling they are zero, i.e. "not augmented",
so what the network learns about augmented images does not leak into samples. EDM's CIFAR-10
settings (p = 0.12): an x-flip on every image (EDM gives it a probability multiplier of 1e8), then
each of y-flip, isotropic scaling (log2 std 0.2), rotation (uniform over the circle), anisotropic
scaling (log2 std 0.2, in a frame rotated by a uniform angle half of the time) and translation (std
0.125 of the image size) with probability p.

The 9 labels, in order: x-flip, y-flip (0 or 1), scaling w (s = 2^(0.2 w)), rotation (cos t - 1,
sin t), anisotropic scaling (w cos 2r, w sin 2r), translation (x, y in units of 0.125 of the size).
They describe the transform completely: :func:`transform` rebuilds the augmented image from the
original image and its labels. One departure from EDM's code, for that reason: EDM labels the
anisotropic scaling (w cos r, w sin r), which (w, r) and (-w, r + pi) share although they scale
along different axes; the doubled angle 2r makes the labels a function of the transform alone.

The geometric transforms are resampled as EDM does: reflect-pad, upsample 2x with the Symlet-6
low-pass filter, bilinear sampling at the transformed grid, downsample 2x with the same filter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

LABELS = 9
SCALE_STD = ANISO_STD = 0.2  # log2 std of isotropic and anisotropic scaling (EDM / ADA)
TRANSLATE_STD = 0.125  # of the image size (EDM / ADA)
ANISO_ROTATE_PROB = 0.5  # anisotropic scaling in a rotated frame half of the time (EDM / ADA)
# Symlet 6 (Daubechies 1992), the low-pass decomposition filter as PyWavelets lists it ("sym6" dec_lo)
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

__all__ = ["LABELS", "augment", "draw_labels", "transform"]


def draw_labels(n: int, p: float, generator: torch.Generator) -> Tensor:
    """The 9 labels of n augmentations with probability p (float32 [n, 9]; all zero when p = 0)."""
    g = generator

    def chosen(prob: float) -> Tensor:
        return torch.rand(n, generator=g) < prob

    if p <= 0:
        return torch.zeros(n, LABELS)
    xflip = torch.randint(2, (n,), generator=g).float()  # EDM: multiplier 1e8, so every image when p > 0
    yflip = torch.randint(2, (n,), generator=g).float() * chosen(p)
    scale = torch.randn(n, generator=g) * chosen(p)
    theta = (torch.rand(n, generator=g) * 2 - 1) * math.pi * chosen(p)
    aniso = torch.randn(n, generator=g) * chosen(p)
    frame = (torch.rand(n, generator=g) * 2 - 1) * math.pi * chosen(ANISO_ROTATE_PROB)
    shift = torch.randn(2, n, generator=g) * chosen(p)
    return torch.stack([xflip, yflip, scale, theta.cos() - 1, theta.sin(), aniso * (2 * frame).cos(),
                        aniso * (2 * frame).sin(), shift[0], shift[1]], dim=1)


def _matrix(rows: list[list]) -> Tensor:
    """[n, 3, 3] from rows of per-sample tensors or numbers."""
    n = next(v.shape[0] for row in rows for v in row if torch.is_tensor(v))
    return torch.stack([torch.stack([v if torch.is_tensor(v) else torch.full((n,), float(v)) for v in row], 1)
                        for row in rows], 1)


def _inverse_map(labels: Tensor, width: int, height: int) -> Tensor:
    """G^-1 [n, 3, 3]: output pixel (x, y, 1), centred, -> input pixel, for the labels' scaling, rotation,
    anisotropic scaling and translation (applied to the image in this order)."""
    lab = labels.double()
    one, zero = torch.ones(len(lab), dtype=lab.dtype), torch.zeros(len(lab), dtype=lab.dtype)
    s = torch.exp2(lab[:, 2] * SCALE_STD)
    theta = torch.atan2(lab[:, 4], lab[:, 3] + 1)
    w = torch.hypot(lab[:, 5], lab[:, 6])
    r = 0.5 * torch.atan2(lab[:, 6], lab[:, 5])
    a = torch.exp2(w * ANISO_STD)
    tx, ty = lab[:, 7] * width * TRANSLATE_STD, lab[:, 8] * height * TRANSLATE_STD

    def rot(angle):
        return _matrix([[angle.cos(), -angle.sin(), zero], [angle.sin(), angle.cos(), zero], [zero, zero, one]])

    def scale(sx, sy):
        return _matrix([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])

    inv_scale = scale(1 / s, 1 / s)
    inv_rotation = rot(theta)  # the image turns by theta: sample the input at -theta... (see the tests)
    inv_aniso = rot(-r) @ scale(1 / a, a) @ rot(r)
    inv_shift = _matrix([[one, zero, -tx], [zero, one, -ty], [zero, zero, one]])
    return inv_scale @ inv_rotation @ inv_aniso @ inv_shift


def _resample(images: Tensor, g_inv: Tensor) -> Tensor:
    """Sample images at G^-1 (pixel units, centred) with EDM's anti-aliased path: reflect-pad, 2x Symlet-6
    upsampling, bilinear sampling, 2x Symlet-6 downsampling."""
    n, c, h, w = images.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    taps = torch.tensor(SYM6, dtype=images.dtype)
    pad = len(SYM6) // 4
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float64).T
    pts = (g_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, n * corners]
    margin = torch.cat([-pts, pts]).max(dim=1).values + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2,
                                                                      dtype=torch.float64)
    margin = margin.clamp_min(0).minimum(torch.tensor([w - 1, h - 1] * 2, dtype=torch.float64))
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil())
    images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2], shift[1, 2] = (mx0 - mx1) / 2, (my0 - my1) / 2
    g_inv = shift @ g_inv
    # 2x upsampling: zeros between the samples, then the (reversed) low-pass filter, along x then y
    up = taps.flip(0).reshape(1, 1, -1).tile(c, 1, 1)
    images = torch.stack([images, torch.zeros_like(images)], dim=4).reshape(n, c, images.shape[2], -1)[..., :-1]
    images = F.conv2d(images, up.unsqueeze(2), groups=c, padding=[0, (len(SYM6) + 1) // 2])
    images = torch.stack([images, torch.zeros_like(images)], dim=3).reshape(n, c, -1, images.shape[3])[:, :, :-1]
    images = F.conv2d(images, up.unsqueeze(3), groups=c, padding=[(len(SYM6) + 1) // 2, 0])
    # the map in the upsampled image, then in affine_grid's [-1, 1] coordinates
    two, half = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)), torch.eye(3, dtype=torch.float64)
    half[0, 2] = half[1, 2] = -0.5
    half_inv = torch.eye(3, dtype=torch.float64)
    half_inv[0, 2] = half_inv[1, 2] = 0.5
    g_inv = half @ (two @ g_inv @ torch.linalg.inv(two)) @ half_inv
    out = [n, c, (h + pad * 2) * 2, (w + pad * 2) * 2]
    to_unit = torch.diag(torch.tensor([2 / images.shape[3], 2 / images.shape[2], 1.0], dtype=torch.float64))
    from_unit = torch.diag(torch.tensor([out[3] / 2, out[2] / 2, 1.0], dtype=torch.float64))
    g_inv = to_unit @ g_inv @ from_unit
    grid = F.affine_grid(g_inv[:, :2, :].to(images.dtype), out, align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # 2x downsampling with the low-pass filter, then the crop back to h x w
    down = taps.reshape(1, 1, -1).tile(c, 1, 1)
    images = F.conv2d(images, down.unsqueeze(2), groups=c, stride=[1, 2], padding=[0, (len(SYM6) - 1) // 2])
    images = images[:, :, :, pad:-pad]
    images = F.conv2d(images, down.unsqueeze(3), groups=c, stride=[2, 1], padding=[(len(SYM6) - 1) // 2, 0])
    return images[:, :, pad:-pad, :]


def transform(images: Tensor, labels: Tensor) -> Tensor:
    """The augmented images that ``labels`` [n, 9] describe (flips first, then the geometric part);
    images are float [n, C, H, W] (any range: the transforms are linear)."""
    n, _, h, w = images.shape
    images = torch.where(labels[:, 0].reshape(n, 1, 1, 1) > 0.5, images.flip(3), images)
    images = torch.where(labels[:, 1].reshape(n, 1, 1, 1) > 0.5, images.flip(2), images)
    if bool((labels[:, 2:] == 0).all()):
        return images
    return _resample(images, _inverse_map(labels, w, h))


def augment(images: Tensor, p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(augmented images, their 9 labels): EDM's pipeline at probability p, drawn from ``generator``."""
    labels = draw_labels(images.shape[0], p, generator)
    return transform(images, labels), labels
