"""fewstep-wandb: the ``wandb`` logger (``train.loggers: [jsonl, {name: wandb, mode: online, project: ...}]``).

Logs through the Weights & Biases client: every metrics.jsonl scalar (against the training step, which may
go back when a run resumes from an earlier checkpoint), the sample grids as images, the resolved recipe as
the run's config, and ``fewstep eval`` results in the run's summary. The W&B run id is kept in the run
directory (``wandb_id.txt``), so a resumed run and a later ``fewstep eval`` continue the same W&B run. Offline
by default: it never waits for a network or a login; ``wandb sync <run>/wandb/offline-run-*`` uploads later,
``mode: online`` logs live. Needs ``pip install fewstep[wandb]``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from fewstep.hookspecs import hookimpl
from fewstep.registry import ComponentConfig, missing_package


class WandbConfig(ComponentConfig):
    mode: Literal["online", "offline", "disabled"] = Field(
        "offline", description="online: log live (needs `wandb login` or WANDB_API_KEY); offline (default): write "
                               "<run>/wandb/ for `wandb sync`; disabled: call nothing.")
    project: str = Field("fewstep", min_length=1, description="W&B project.")
    entity: Optional[str] = Field(None, description="W&B entity (user or team); null = the login's default.")
    group: Optional[str] = Field(None, description="W&B group; null = the run group (runs/<group>/...).")
    tags: list[str] = Field(default_factory=list, description="W&B tags.")
    images: bool = Field(True, description="Log the sample grids as images.")

    def resources(self) -> list[tuple[tuple, str]]:
        """What ``fewstep check`` notes before a run: the wandb package, when it is not installed."""
        return missing_package("wandb", "wandb", "the wandb logger", ("train", "loggers"))


@hookimpl
def fewstep_register_loggers(registry):
    registry.add("wandb", "fewstep_wandb.logger:WandbLogger", WandbConfig,
                 "Weights & Biases: scalars, sample grids, the recipe as config, eval results in the summary; "
                 "offline by default (needs the wandb extra)")
