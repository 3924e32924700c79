"""The TensorBoard logger (:class:`fewstep.protocols.Logger`) over ``torch.utils.tensorboard.SummaryWriter``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fewstep.registry import require_resources
from fewstep.run.tracking import result_values


def flat_settings(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The recipe's scalar settings as ``section.field`` -> value (numbers, strings, booleans): the
    HParams view's columns. Lists and nested components are flattened by index and name."""
    out: dict[str, Any] = {}
    items = recipe.items() if isinstance(recipe, dict) else enumerate(recipe)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            out.update(flat_settings(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


class TensorBoardLogger:
    """Scalars under ``train/``, grids as images, the recipe as text, eval results under ``eval/`` and as
    HParams, in ``<run>/<subdir>``."""

    def __init__(self, cfg):
        require_resources(cfg)  # the package: one line naming the extra
        self.cfg, self.writer, self.run = cfg, None, None

    def start(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        # a resumed training session drops the events logged after its checkpoint (they come again)
        purge = run.start_step + 1 if run.session == "train" and run.start_step > 0 else None
        self.writer = SummaryWriter(str(Path(run.run_dir) / self.cfg.subdir), purge_step=purge,
                                    flush_secs=self.cfg.flush_secs)
        if run.session == "train" and run.start_step == 0:
            import yaml

            text = yaml.safe_dump(run.recipe, sort_keys=False, default_flow_style=None)
            self.writer.add_text("recipe", "    " + text.replace("\n", "\n    "), 0)  # markdown code block

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, step)

    def image(self, step: int, tag: str, path: Path) -> None:
        if not self.cfg.images:
            return
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            self.writer.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")

    def results(self, kind: str, rows: list[dict[str, Any]], step: int | None) -> None:
        """Eval rows ({"steps": k, <metric>: value, ...}) as the HParams entry (the recipe's settings against
        those values), whose scalars ``eval/<metric>/<k> steps`` sit at the checkpoint's step."""
        metrics = result_values(kind, rows)
        if metrics:
            self.writer.add_hparams(flat_settings(self.run.recipe), metrics, run_name=".", global_step=step)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.add_text("status", status, self.run.start_step if self.run else 0)
            self.writer.close()
            self.writer = None
