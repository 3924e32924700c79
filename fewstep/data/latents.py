"""Pre-encoded latents of a VAE (IMM App. I.1, research/imm.md §6 "Latents"), and the encoder.

``fewstep encode`` runs a diffusers AutoencoderKL over an image dataset once and stores, for every
image, the posterior mean and std (float16) with its label, plus ``meta.json`` (the VAE, the image
size, the per-channel mean and std of the latents ``mean + std z`` that training draws). Training
draws ``mean + std z`` each time a latent is used and normalises it per channel:
``(z - mu_c) / sigma_c * sigma_d`` (IMM uses its own ImageNet-256 statistics for sd-vae-ft-ema, given in
the recipe; by default the stored ones).
Samples are decoded back to images for metrics and grids with the same VAE.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fewstep.data.base import Batch
from fewstep.errors import ConfigError, MissingResource
from fewstep.files import atomic_path, write_json

FILE, META = "latents.safetensors", "meta.json"


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
def encode_images(vae, images_u8: torch.Tensor, batch_size: int = 64, progress=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) of every image, float16 on the CPU."""
    device = next(vae.parameters()).device
    means, stds = [], []
    for i in range(0, images_u8.shape[0], batch_size):
        dist = vae.encode(_to_vae_input(images_u8[i:i + batch_size]).to(device)).latent_dist
        means.append(dist.mean.half().cpu())
        stds.append(dist.std.half().cpu())
        if progress:
            progress(min(i + batch_size, images_u8.shape[0]))
    return torch.cat(means), torch.cat(stds)


def write_latents(folder: str | Path, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor | None,
                  vae: str, image_shape: tuple[int, ...], source: str) -> Path:
    """Store an encoded set (atomically: a temporary file renamed)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"mean": mean.contiguous(), "std": std.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.to(torch.long).contiguous()
    with atomic_path(folder / FILE) as tmp:
        save_file(tensors, str(tmp))
    m, s = mean.double(), std.double()
    # moments of the latents training draws (mean + std z): Var = Var(mean) + E[std^2] per channel
    var = m.var(dim=(0, 2, 3)) + (s * s).mean(dim=(0, 2, 3))
    meta = {"vae": vae, "image_shape": list(image_shape), "source": source, "n": int(mean.shape[0]),
            "latent_shape": list(mean.shape[1:]), "channel_mean": m.mean(dim=(0, 2, 3)).tolist(),
            "channel_std": var.sqrt().tolist()}
    write_json(folder / META, meta)
    return folder


class LatentDataset:
    """A folder written by :func:`write_latents`, sampled as normalised latents [C, h, w]."""

    kind = "images"  # metrics and grids see decoded images (to_uint8 runs the VAE's decoder)

    def __init__(self, root: str | Path, sigma_d: float = 0.5, channel_mean=None, channel_std=None,
                 conditional: bool = False, vae: str | None = None):
        from safetensors.torch import load_file

        root = Path(root)
        if not (root / FILE).is_file() or not (root / META).is_file():
            raise MissingResource(f"data.root: {root} holds no encoded latents ({FILE} and {META}); create them with "
                              "`fewstep encode --data <image dataset> --vae <AutoencoderKL> --out <folder>`")
        t = load_file(str(root / FILE))
        self.meta = json.loads((root / META).read_text())
        self.mean_, self.std_ = t["mean"], t["std"]
        self.labels = t.get("labels")
        if conditional and self.labels is None:
            raise ConfigError(f"data.conditional: {root} was encoded without labels")
        self.num_classes = int(self.labels.max()) + 1 if conditional else None
        self.shape = tuple(self.mean_.shape[1:])
        self.sigma_d = float(sigma_d)
        c = self.shape[0]
        mu = torch.tensor(channel_mean if channel_mean is not None else self.meta["channel_mean"], dtype=torch.float32)
        sd = torch.tensor(channel_std if channel_std is not None else self.meta["channel_std"], dtype=torch.float32)
        if mu.numel() != c or sd.numel() != c:
            raise ConfigError(f"data.channel_mean/channel_std need {c} values (the latents have {c} channels)")
        self.mu, self.sd = mu.view(1, c, 1, 1), sd.view(1, c, 1, 1)
        self.vae_name = vae or self.meta["vae"]
        self._vae = None

    def __len__(self) -> int:
        return self.mean_.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``mean + std z`` of n stored latents (with replacement), normalised per channel to sigma_d."""
        idx = torch.randint(0, len(self), (n,), generator=generator)
        z = self.mean_[idx].float() + self.std_[idx].float() * torch.randn(n, *self.shape, generator=generator)
        x = (z - self.mu) / self.sd * self.sigma_d
        return Batch(x, self.labels[idx] if self.num_classes else None)

    def to_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised data space -> the VAE's latent space."""
        return x.detach().float().cpu() / self.sigma_d * self.sd + self.mu

    @torch.no_grad()
    def to_uint8(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Decode with the VAE to uint8 images [n, 3, H, W]."""
        if self._vae is None:
            self._vae = load_vae(self.vae_name)
        z = self.to_latents(x)
        out = [self._vae.decode(z[i:i + batch_size]).sample for i in range(0, z.shape[0], batch_size)]
        return ((torch.cat(out).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
