"""The built-in data sets' Configs (registered in fewstep.builtin): toy 2D sets, digits, CIFAR-10, image
folders and pre-encoded latents. No torch is imported here."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field

from fewstep.registry import ComponentConfig


class EightGaussiansConfig(ComponentConfig):
    radius: float = Field(2.0, gt=0, description="Radius of the circle of centres (before normalisation).")
    std: float = Field(0.1, gt=0, description="Std of each Gaussian (before normalisation).")


class CheckerboardConfig(ComponentConfig):
    squares: int = Field(4, ge=2, description="Cells per side of the board on [-2, 2]^2.")


class MoonsConfig(ComponentConfig):
    noise: float = Field(0.05, ge=0, description="Std of the Gaussian noise added to each moon.")


class SpiralConfig(ComponentConfig):
    turns: float = Field(1.5, gt=0, description="Number of turns of the 2D swiss roll.")
    noise: float = Field(0.05, ge=0, description="Relative std of the Gaussian noise.")


class ImagesConfig(ComponentConfig):
    """What every in-memory image data set shares: EDM's augmentation (fewstep.data.augment)."""

    augment: float = Field(
        0.0, ge=0, le=1, description="EDM's non-leaking augmentation probability p (EDM's CIFAR-10: 0.12; IMM Table 5 "
                                     "turns augmentation on without stating p): flips, scaling, rotation, anisotropic "
                                     "scaling and translation, 9 labels conditioning the network (augment_dim: 9); "
                                     "0 = off.")

    def check_recipe(self, recipe) -> list[tuple[tuple, str]]:
        """Augmented images need a network conditioned on the 9 augmentation labels."""
        if self.augment > 0 and recipe.network.model_dump().get("augment_dim") != 9:
            return [(("data", "augment"), f"needs a network that takes the 9 augmentation labels "
                                          f"(network.augment_dim: 9; {recipe.network.name} has "
                                          f"{recipe.network.model_dump().get('augment_dim', 'none')})")]
        return []


class DigitsConfig(ImagesConfig):
    size: Literal[8, 16, 32] = Field(
        8, description="Image side in pixels: the 8x8 originals, or bilinear upsamplings for UNets.")
    conditional: bool = Field(
        False, description="Class-conditional on the digit label (10 classes, plus a null class for CFG).")
    xflip: bool = Field(False, description="Mirror half of each batch left-right (data augmentation; off for digits).")


class CIFAR10Config(ImagesConfig):
    @classmethod
    def example(cls, folder: Path) -> dict:
        """The conformance kit never downloads: it checks CIFAR-10 where the data already is."""
        return {"download": False}

    root: str = Field("data", description="Folder holding (or to receive) cifar-10-batches-py/.")
    download: bool = Field(True, description="Download the 163 MB archive when it is missing (torchvision).")
    split: Literal["train", "test"] = Field(
        "train", description="50k training images (what FID is measured against) or the 10k test images.")
    conditional: bool = Field(
        False, description="Class-conditional on the 10 labels (IMM's CIFAR-10 model is unconditional).")
    xflip: bool = Field(True, description="Mirror half of each batch left-right (IMM Table 5, CIFAR-10: x-flip on).")

    def resources(self) -> list[tuple[tuple, str]]:
        if self.download or (Path(self.root) / "cifar-10-batches-py").is_dir():
            return []
        return [(("data", "root"), f"{self.root}/cifar-10-batches-py does not exist and download is off")]


class ImageFolderConfig(ImagesConfig):
    @classmethod
    def example(cls, folder: Path) -> dict:
        """Two class subfolders of small PNGs (fewstep.testing.fixtures.image_folder), read as 8 x 8."""
        from fewstep.testing.fixtures import image_folder

        return {"root": str(image_folder(folder / "images")), "size": 8, "conditional": True}

    root: str = Field(
        description="Folder of images (png, jpg, bmp, webp), searched recursively, class subfolders giving labels; or "
                    "a list file (.txt, .lst) of image paths relative to it, each optionally followed by a label.")
    size: int = Field(
        64, ge=4, description="Side in pixels: ADM's centre crop (box halvings, bicubic resize of the short side to "
                              "size, the centre), as DiT and IMM prepare ImageNet.")
    stream: bool = Field(
        False, description="Read the images from disk at every batch instead of holding them in memory (sets that do "
                           "not fit; the pixel mean and std then come from 1024 images spread over the set).")
    channels: Literal[1, 3] = Field(3, description="3 = RGB, 1 = greyscale.")
    conditional: bool = Field(False, description="Class-conditional on the subfolder names (sorted).")
    xflip: bool = Field(False, description="Mirror half of each batch left-right.")

    def resources(self) -> list[tuple[tuple, str]]:
        return [] if Path(self.root).exists() else [(("data", "root"), f"{self.root} does not exist")]


class LatentsConfig(ComponentConfig):
    @classmethod
    def example(cls, folder: Path) -> dict:
        """Digits encoded by a tiny random AutoencoderKL (fewstep.testing.fixtures.encoded_latents)."""
        from fewstep.testing.fixtures import encoded_latents

        return {"root": str(encoded_latents(folder)), "conditional": True}

    root: str = Field(description="Folder written by `fewstep encode` (shards/ and meta.json).")
    channel_mean: Optional[list[float]] = Field(
        None, description="Per-channel mean mu_c of the normalisation (z - mu) / sigma * sigma_d; null = the encoded "
                          "set's own (IMM ImageNet-256, sd-vae-ft-ema: [0.86488, -0.27787, 0.21617, 0.37384]).")
    channel_std: Optional[list[Annotated[float, Field(gt=0)]]] = Field(
        None, description="Per-channel std sigma_c; null = the encoded set's own "
                          "(IMM: [4.85504, 5.31922, 3.93725, 3.98700]).")
    conditional: bool = Field(False, description="Class-conditional on the stored labels (IMM ImageNet: yes).")
    vae: Optional[str] = Field(None, description="VAE that decodes samples for metrics and grids; null = the encoder.")
    xflip: bool = Field(False, description="Draw the stored x-flipped encodings (`fewstep encode --xflip`) for half "
                                           "the samples (IMM Table 5, ImageNet: x-flip off).")

    def resources(self) -> list[tuple[tuple, str]]:
        if (Path(self.root) / "meta.json").is_file():
            return []
        return [(("data", "root"), f"{self.root} holds no encoded latents yet; make them with `fewstep encode --data "
                                   f"image_folder --set data.root=<images> --vae <VAE> --out {self.root}`")]
