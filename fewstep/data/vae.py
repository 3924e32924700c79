"""A diffusers AutoencoderKL (the SD-VAE of IMM's and DiT's latent models) into and out of its latent space.

IMM App. I.1 and DiT train on the posterior of ``stabilityai/sd-vae-ft-ema`` at 256 x 256 (latents
4 x 32 x 32): images in [-1, 1] are encoded to the posterior mean and std, and samples are decoded
back to images for metrics and grids.
"""
from __future__ import annotations

import torch

from fewstep.errors import MissingResource

__all__ = ["decode_uint8", "encode_images", "load_vae", "posterior"]


def load_vae(name: str, device="cpu"):
    """An AutoencoderKL from a local folder (config.json + weights) or a Hugging Face id (cache/network)."""
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(name, low_cpu_mem_usage=False)  # (no accelerate needed)
        return vae.to(device).eval().requires_grad_(False)
    except Exception as exc:  # noqa: BLE001 - offline hub, missing folder, bad files
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise MissingResource(f"vae {name!r} could not be loaded ({type(exc).__name__}: {detail}); give a local "
                              "folder with config.json and diffusion_pytorch_model.safetensors, or a hub id such as "
                              "stabilityai/sd-vae-ft-ema on a machine with network (or a filled HF cache)") from None


def _to_vae_input(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 1 or 3, H, W] -> float RGB in [-1, 1]."""
    x = u8.float() / 127.5 - 1.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def posterior(vae, images_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior (mean, std) of one batch of uint8 images, float16 on the CPU."""
    device = next(vae.parameters()).device
    dist = vae.encode(_to_vae_input(images_u8).to(device)).latent_dist
    return dist.mean.half().cpu(), dist.std.half().cpu()


def encode_images(vae, images_u8: torch.Tensor, batch_size: int = 64, progress=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) of every image, float16 on the CPU, ``batch_size`` images per VAE call."""
    means, stds = [], []
    for i in range(0, images_u8.shape[0], batch_size):
        m, s = posterior(vae, images_u8[i:i + batch_size])
        means.append(m)
        stds.append(s)
        if progress:
            progress(min(i + batch_size, images_u8.shape[0]))
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def decode_uint8(vae, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Latents z -> uint8 images [n, 3, H, W] through the VAE's decoder."""
    device = next(vae.parameters()).device
    out = [vae.decode(z[i:i + batch_size].to(device)).sample.cpu() for i in range(0, z.shape[0], batch_size)]
    return ((torch.cat(out).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
