"""The Weights & Biases logger (:class:`fewstep.protocols.Logger`) over the ``wandb`` client."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fewstep.files import write_text
from fewstep.registry import require_resources
from fewstep.run.tracking import result_values

ID_FILE = "wandb_id.txt"  # in the run directory: the W&B run that this run continues
STEP = "step"  # the x-axis of every logged value (a resumed run may log a step again)


def run_id(run_dir: Path) -> str:
    """The W&B run id of ``run_dir``: the stored one, or a new one, stored."""
    path = Path(run_dir) / ID_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    new = secrets.token_hex(6)  # W&B ids are [a-z0-9]
    write_text(path, new + "\n")
    return new


class WandbLogger:
    """One W&B run per fewstep run: scalars and grids against ``step``, the recipe as config, eval results
    in the summary."""

    def __init__(self, cfg):
        require_resources(cfg)  # the package: one line naming the extra
        self.cfg, self.run = cfg, None

    def start(self, run) -> None:
        if self.cfg.mode == "disabled":
            return
        import wandb

        cfg = self.cfg
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, group=cfg.group or run.group, tags=list(cfg.tags) or None,
            name=run.name, id=run_id(run.run_dir), resume="allow", dir=str(run.run_dir), config=run.recipe,
            mode=cfg.mode, job_type=run.session, reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"))  # fewstep's own output stays as it is
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({STEP: step, **{f"train/{k}": v for k, v in values.items()
                                         if k != "step" and isinstance(v, (int, float))}})

    def image(self, step: int, tag: str, path: Path) -> None:
        if self.run is not None and self.cfg.images:
            import wandb

            self.run.log({STEP: step, tag: wandb.Image(str(path))})

    def results(self, kind: str, rows: list[dict[str, Any]], step: int | None) -> None:
        if self.run is None:
            return
        values = result_values(kind, rows)
        self.run.log({STEP: step or 0, **values})
        self.run.summary.update(values)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.summary["status"] = status
            self.run.finish(exit_code=1 if status == "failed" else 0)
            self.run = None
