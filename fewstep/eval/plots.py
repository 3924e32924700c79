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

__all__ = ["image_grid", "loss_curve", "metric_vs_nfe", "scatter_grid", "tile"]

_PANEL_INCHES = 3.0
_DPI = 100


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    from fewstep.files import atomic_path

    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
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

    def draw(ax, label, pts):
        colour = "0.35" if label == "data" and reference is not None else "C0"
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, color=colour, linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")

    return _panel_row(items, draw, path, title)


def _panel_row(items: list, draw, path, title: str | None) -> pathlib.Path:
    """One row of square, axis-free panels: ``draw(ax, label, payload)`` for each ``(label, payload)``."""
    k = len(items)
    top = 0.5 if title else 0.3  # inches reserved above the panels for labels / title
    fig = _new_figure(_PANEL_INCHES * k, _PANEL_INCHES + top)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (label, payload) in zip(axes, items):
        draw(ax, label, payload)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def tile(images: torch.Tensor, cols: int | None = None):
    """uint8 images [n, C, H, W] -> one uint8 mosaic [rows*(H+1)+1, cols*(W+1)+1, C] (numpy), 1-pixel gaps."""
    import numpy as np

    imgs = images.detach().cpu().numpy()
    n, c, h, w = imgs.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = imgs[i].transpose(1, 2, 0)
    return out


def image_grid(
    panels: Sequence[tuple[str, torch.Tensor]],
    path: str | pathlib.Path,
    *,
    reference: torch.Tensor | None = None,
    title: str | None = None,
    per_panel: int = 64,
) -> pathlib.Path:
    """One row of image mosaics (the first ``per_panel`` uint8 images [n, C, H, W] of each panel), as a PNG.

    ``reference`` (data images) is drawn first, labelled ``"data"``; grayscale is shown in gray.
    """
    items = [(str(label), imgs[:per_panel]) for label, imgs in panels]
    if reference is not None:
        items.insert(0, ("data", reference[:per_panel]))
    if not items:
        raise ValueError("image_grid needs at least one panel or a reference")

    def draw(ax, label, imgs):
        mosaic = tile(imgs)
        if mosaic.shape[2] == 1:
            ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(mosaic, interpolation="nearest")

    return _panel_row(items, draw, path, title)


def metric_vs_nfe(
    curves: dict[str, dict[str, dict[str, list[tuple[float, float, float]]]]],
    path: str | pathlib.Path,
    *,
    floors: dict[tuple[str, str], float] | None = None,
    title: str | None = None,
) -> pathlib.Path:
    """A row of panels per data set, a panel per metric: each entry's mean (with std error bars)
    against NFE on log-log axes.

    ``curves[row][metric][entry] = [(nfe, mean, std), ...]``; ``floors[(row, metric)]`` (data vs
    data) is drawn dashed. The y axis is logarithmic when every value of the panel is > 0.
    """
    from matplotlib.ticker import FormatStrFormatter, NullLocator

    rows = list(curves)
    metrics = list(dict.fromkeys(m for r in rows for m in curves[r]))
    if not rows or not metrics:
        raise ValueError("metric_vs_nfe needs at least one data set and metric")
    fig = _new_figure(4.2 * len(metrics), 3.4 * len(rows) + (0.4 if title else 0))
    axes = fig.subplots(len(rows), len(metrics), squeeze=False)
    for i, row in enumerate(rows):
        for ax, metric in zip(axes[i], metrics):
            values, nfes = [], set()
            for j, (entry, pts) in enumerate(curves[row].get(metric, {}).items()):
                pts = sorted(p for p in pts if _is_number(p[1]))
                if not pts:
                    continue
                nfe, mean, std = zip(*pts)
                values += list(mean)
                nfes.update(nfe)
                ax.errorbar(nfe, mean, yerr=[s if _is_number(s) else 0 for s in std], label=entry, marker="o",
                            markersize=3, linewidth=1.2, capsize=2, color=f"C{j % 10}")
            floor = (floors or {}).get((row, metric))
            if _is_number(floor):
                ax.axhline(floor, color="0.5", linestyle="--", linewidth=1, label="data vs data")
                values.append(floor)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(nfes) or [1])
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_locator(NullLocator())
            if values and all(v > 0 for v in values):
                ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_title(f"{row}: {metric}", fontsize=10)
            ax.grid(True, alpha=0.3, which="both")
            if values:
                ax.legend(fontsize=7)
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
    title: str | None = None,
) -> pathlib.Path:
    """Line plot of each of ``keys`` against ``"step"`` for metrics records, saved as a PNG (with dots
    while there are few records, so that one record is visible).

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
        ax.plot(steps, values, label=key, linewidth=1.2, marker="o" if len(steps) < 20 else None, markersize=3)
    if all_values:
        if all(v > 0 for v in all_values):
            ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(", ".join(keys) + " (mean over each log interval)")
    ax.set_title(title or "training loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
