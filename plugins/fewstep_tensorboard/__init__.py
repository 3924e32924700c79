"""fewstep-tensorboard: the ``tensorboard`` logger (``train.loggers: [jsonl, tensorboard]``).

Writes, through ``torch.utils.tensorboard``, into ``<run>/tensorboard/``: every metrics.jsonl scalar under
``train/``, the sample grids as images, the resolved recipe as text, and ``fewstep eval`` results under
``eval/<metric>/<steps> steps`` plus the HParams view (the recipe's scalar settings against the eval metrics).
A resumed run writes to the same folder and drops what was logged after its checkpoint, as metrics.jsonl does.
``tensorboard --logdir runs/`` shows every run. Needs ``pip install fewstep[tensorboard]``.
"""
from __future__ import annotations

from pydantic import Field

from fewstep.hookspecs import hookimpl
from fewstep.registry import ComponentConfig, missing_package


class TensorBoardConfig(ComponentConfig):
    subdir: str = Field("tensorboard", min_length=1,
                        description="Folder inside the run directory that holds the event files.")
    flush_secs: float = Field(30.0, gt=0, description="Seconds between writes of pending events to disk.")
    images: bool = Field(True, description="Log the sample grids as images (false: scalars and text only).")

    def resources(self) -> list[tuple[tuple, str]]:
        """What ``fewstep check`` notes before a run: the tensorboard package, when it is not installed."""
        return missing_package("tensorboard", "tensorboard", "the tensorboard logger", ("train", "loggers"))


@hookimpl
def fewstep_register_loggers(registry):
    registry.add("tensorboard", "fewstep_tensorboard.logger:TensorBoardLogger", TensorBoardConfig,
                 "TensorBoard event files in <run>/tensorboard: scalars, sample grids, the recipe, eval results "
                 "and HParams (needs the tensorboard extra)")
