"""The built-in metrics' Configs (registered in fewstep.builtin). No torch is imported here."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field

from fewstep.registry import ComponentConfig


class SW2Config(ComponentConfig):
    n_projections: int = Field(512, ge=1, description="Random directions for sliced Wasserstein-2.")


class MMDConfig(ComponentConfig):
    bandwidths: Optional[list[Annotated[float, Field(gt=0)]]] = Field(
        None, description="Gaussian kernel bandwidths; null = median heuristic x (0.5, 1, 2).")


def reference_file(reference: str, name: str, flags: str = "") -> list[tuple[tuple, str]]:
    """A metric's stored reference statistics that are not there yet (``fewstep check`` notes it)."""
    if reference.endswith((".npz", ".pkl")) and not Path(reference).is_file():
        return [(("eval", "metrics", name, "reference"),
                 f"{reference} does not exist yet; make it with `fewstep fid-ref IMAGES{flags} --out {reference}`")]
    return []


class FIDConfig(ComponentConfig):
    kid: bool = Field(True, description="Also the kernel Inception distance (KID, Binkowski et al. 2018).")
    kid_subsets: int = Field(100, ge=1, description="KID subsets of min(1000, n) samples (torch-fidelity's default).")
    isc: bool = Field(False, description="Also the Inception score (IS).")
    prc: bool = Field(False, description="Also precision/recall (Kynkaanniemi et al. 2019; needs VGG16 weights).")
    weights: Optional[str] = Field(
        None, description="Inception weights file (weights-inception-2015-12-05-6726825d.pth); null = "
                          "$FEWSTEP_INCEPTION_WEIGHTS or torch hub's checkpoints folder.")
    reference: str = Field(
        "data", description="'data': fresh samples of the recipe's dataset; a torch-fidelity input such as "
                            "cifar10-train (the 50k training images papers compare against); or a file of Inception "
                            "statistics against which FID (and IS) alone are measured: .npz with mu and sigma "
                            "(`fewstep fid-ref`, EDM, ADM's reference batches, clean-fid) or EDM2's .pkl (the "
                            "ImageNet-256 img256.pkl of lumalabs/tvm), read without running code.")
    device: str = Field("auto", description="Where the feature extractor runs: auto (CUDA when present), cpu, cuda.")

    def resources(self) -> list[tuple[tuple, str]]:
        return reference_file(self.reference, "fid")


class FDDigitsConfig(ComponentConfig):
    kid: bool = Field(True, description="Also the kernel distance (KID) in the same features.")
    kid_subsets: int = Field(10, ge=1, description="KID subsets of min(1000, n) samples (torch-fidelity's default is "
                                                   "100; 10 keeps a CPU evaluation at seconds).")
    isc: bool = Field(False, description="Also the classifier's 'inception score' (IS-digits).")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda.")
    reference: str = Field("data", description="'data': fresh samples of the recipe's dataset; or an .npz of the "
                                               "classifier's feature statistics (`fewstep fid-ref --features digits`),"
                                               " against which FD-digits (and IS) alone are measured.")

    def resources(self) -> list[tuple[tuple, str]]:
        return reference_file(self.reference, "fd_digits", " --features digits")
