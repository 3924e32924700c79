"""PNG plots for 2D samples and training curves.

matplotlib is imported inside the functions (importing this module stays cheap), and figures are
drawn on an Agg canvas created directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), not
through ``pyplot``: no global backend switch, no figure registry to leak into, safe without a
display.
"""
from __future__ import annotations

import math
import pathlib
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # torch, like matplotlib, is imported only when a function runs
    import torch

__all__ = ["loss_curve", "scatter_grid"]

_PANEL_INCHES = 3.0
_DPI = 100


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    fig.clear()
    return path


def _points_numpy(points: torch.Tensor, label: str):
    import torch

    arr = torch.as_tensor(points).detach().to(device="cpu", dtype=torch.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"panel {label!r}: expected points [n, 2], got shape {tuple(arr.shape)}")
    return arr.numpy()


def _auto_lim(pts) -> float:
    """1.15 times the 99.5th percentile of ``|coords|`` (finite values only); 1.0 if undefined."""
    import numpy as np

    a = np.abs(pts[np.isfinite(pts)])
    if a.size == 0:
        return 1.0
    lim = float(np.percentile(a, 99.5)) * 1.15
    return lim if math.isfinite(lim) and lim > 0 else 1.0


def scatter_grid(
    panels: Sequence[tuple[str, torch.Tensor]],
    path: str | pathlib.Path,
    *,
    reference: torch.Tensor | None = None,
    lim: float | None = None,
    title: str | None = None,
) -> pathlib.Path:
    """One row of square scatter plots of 2D samples, saved as a PNG.

    Parameters
    ----------
    panels : sequence of (str, Tensor)
        ``(label, points [n, 2])`` per panel, left to right.
    path : str or Path
        Output PNG; parent folders are created.
    reference : Tensor, optional
        Data samples ``[n, 2]``, drawn first as their own panel labelled ``"data"``.
    lim : float, optional
        Axis range ``[-lim, lim]`` on every panel; by default 1.15 times the 99.5th percentile of
        ``|coords|`` of ``reference`` (or of the first panel).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    items = [(str(label), _points_numpy(pts, str(label))) for label, pts in panels]
    if reference is not None:
        items.insert(0, ("data", _points_numpy(reference, "data")))
    if not items:
        raise ValueError("scatter_grid needs at least one panel or a reference")
    if lim is None:
        lim = _auto_lim(items[0][1])
    k = len(items)
    top = 0.5 if title else 0.3  # inches reserved above the panels for labels / title
    fig = _new_figure(_PANEL_INCHES * k, _PANEL_INCHES + top)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (label, pts) in zip(axes, items):
        colour = "0.35" if label == "data" and reference is not None else "C0"
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, color=colour, linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def loss_curve(
    records: Iterable[dict],
    path: str | pathlib.Path,
    *,
    keys: Sequence[str] = ("loss",),
) -> pathlib.Path:
    """Line plot of each of ``keys`` against ``"step"`` for metrics records, saved as a PNG.

    Records without ``"step"`` or without a finite number under a key are skipped for that key.
    The y axis is logarithmic when every plotted value is > 0.

    Parameters
    ----------
    records : iterable of dict
        E.g. the parsed lines of a ``metrics.jsonl``.
    path : str or Path
        Output PNG; parent folders are created.
    keys : sequence of str
        Record keys to plot, one line each.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    records = list(records)
    fig = _new_figure(6.0, 4.0)
    ax = fig.subplots()
    all_values: list[float] = []
    for key in keys:
        pairs = sorted(
            (float(r["step"]), float(r[key]))
            for r in records
            if _is_number(r.get("step")) and _is_number(r.get(key))
        )
        if not pairs:
            continue
        steps, values = zip(*pairs)
        all_values.extend(values)
        ax.plot(steps, values, label=key, linewidth=1.2)
    if all_values:
        if all(v > 0 for v in all_values):
            ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
