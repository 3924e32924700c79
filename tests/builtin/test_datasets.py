"""fewstep.builtin.datasets: the folder data sets' examples build, and each Config names the files a run
would need that are not there (``fewstep check`` notes them)."""
from __future__ import annotations

import pytest
import torch

from fewstep.builtin.datasets import CIFAR10Config, ImageFolderConfig, LatentsConfig
from fewstep.testing.fixtures import image_folder


# --- examples of the folder datasets -------------------------------------------------------------
@pytest.mark.parametrize(("cls", "name", "shape", "classes"), [(ImageFolderConfig, "image_folder", (3, 8, 8), 2),
                                                               (LatentsConfig, "latents", (4, 8, 8), 10)])
def test_examples_return_configs_that_build(regs, tmp_path, cls, name, shape, classes):
    fields = cls.example(tmp_path)
    assert fields["conditional"] is True
    entry = regs.datasets.get(name)
    data = entry.build(entry.model().model_validate({"name": name, **fields}), 0.5)
    assert tuple(data.shape) == shape and data.num_classes == classes
    assert data.sample(3, torch.Generator().manual_seed(0)).x.shape == (3, *shape)


def test_the_cifar10_example_never_downloads():
    from fewstep.builtin import CIFAR10Config

    assert CIFAR10Config.example(None) == {"download": False}


# --- files a run would need ----------------------------------------------------------------------
def test_an_image_folder_that_is_there_names_nothing(tmp_path):
    root = image_folder(tmp_path / "imgs")
    assert ImageFolderConfig(root=str(root)).resources() == []
    missing = ImageFolderConfig(root=str(tmp_path / "nope")).resources()
    assert missing == [(("data", "root"), f"{tmp_path / 'nope'} does not exist")]


def test_latents_need_the_meta_file_an_encode_writes_last(tmp_path):
    (tmp_path / "lat" / "shards").mkdir(parents=True)  # an encode in progress: shards, no meta.json yet
    cfg = LatentsConfig(root=str(tmp_path / "lat"))
    [(where, message)] = cfg.resources()
    assert where == ("data", "root") and "holds no encoded latents yet" in message and "fewstep encode" in message
    (tmp_path / "lat" / "meta.json").write_text("{}")
    assert cfg.resources() == []


def test_cifar10_is_missing_only_when_it_may_not_download(tmp_path):
    assert CIFAR10Config(root=str(tmp_path)).resources() == []  # download: true fetches it
    offline = CIFAR10Config(root=str(tmp_path), download=False)
    assert offline.resources() == [(("data", "root"),
                                    f"{tmp_path}/cifar-10-batches-py does not exist and download is off")]
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert offline.resources() == []
