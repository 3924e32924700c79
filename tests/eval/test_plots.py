import torch

from fewstep.eval.plots import image_grid, loss_curve, metric_vs_nfe, scatter_grid, tile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == PNG_MAGIC


def test_scatter_grid_writes_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(500, 2, generator=g)
    panels = [("1 step", torch.randn(300, 2, generator=g)), ("2 steps", torch.rand(300, 2))]
    out = scatter_grid(panels, tmp_path / "sub" / "grid.png", reference=ref, title="samples")
    assert out == tmp_path / "sub" / "grid.png"
    assert _is_png(out)
    out2 = scatter_grid(panels, str(tmp_path / "nolim.png"), lim=3.0)
    assert _is_png(out2)


def test_loss_curve_writes_png(tmp_path):
    records = [{"step": i, "loss": 1.0 / (i + 1), "lr": 1e-3} for i in range(50)]
    records.append({"step": 50, "event": "checkpoint"})  # no "loss": skipped
    out = loss_curve(records, tmp_path / "curves" / "loss.png", keys=("loss", "lr"))
    assert _is_png(out)
    # Non-positive values (linear y) and an empty plot both still write a file.
    neg = [{"step": i, "loss": -float(i)} for i in range(5)]
    assert _is_png(loss_curve(neg, tmp_path / "neg.png"))
    assert _is_png(loss_curve([], tmp_path / "empty.png"))


def test_tile_places_each_image_with_one_pixel_gaps():
    imgs = torch.arange(5, dtype=torch.uint8).repeat_interleave(12).view(5, 3, 2, 2) * 10
    m = tile(imgs, cols=2)
    assert m.shape == (3 * 3 + 1, 2 * 3 + 1, 3)
    assert (m[1:3, 1:3] == 0).all() and (m[1:3, 4:6] == 10).all() and (m[7:9, 1:3] == 40).all()
    assert (m[0] == 255).all() and (m[7:9, 4:6] == 255).all()  # gaps and the empty sixth cell stay white


def test_image_grid_writes_png_for_gray_and_rgb(tmp_path):
    gray = torch.randint(0, 256, (70, 1, 8, 8), dtype=torch.uint8)
    rgb = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    assert _is_png(image_grid([("1 step", gray)], tmp_path / "g.png", reference=gray, title="t"))
    assert _is_png(image_grid([("a", rgb), ("b", rgb)], tmp_path / "c.png"))


def test_metric_vs_nfe_writes_a_panel_per_data_and_metric(tmp_path):
    curves = {d: {"energy": {"FM": [(1, 0.4, 0.01), (2, 0.1, 0.0)], "IMM": [(1, 0.002, 0.0), (2, 0.001, 0.0)]},
                  "sw2": {"FM": [(1, 0.4, 0.0)]}} for d in ("a", "b")}
    path = metric_vs_nfe(curves, tmp_path / "r.png", floors={("a", "energy"): 0.0003}, title="bench")
    assert _is_png(path)


def test_loss_curve_shows_a_single_record_and_says_what_it_plots(tmp_path, monkeypatch):
    import fewstep.eval.plots as plots

    seen, real = {}, plots._save

    def save(fig, path):  # what the figure holds before it is written and closed
        ax = fig.axes[0]
        seen.update(title=ax.get_title(), x=ax.get_xlabel(), y=ax.get_ylabel(),
                    lines=[(line.get_marker(), list(line.get_xdata())) for line in ax.get_lines()])
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    out = loss_curve([{"step": 10, "loss": 0.5}], tmp_path / "loss.png", title="imm_toy: training loss")
    assert _is_png(out) and seen["lines"] == [("o", [10.0])]  # a dot, not an invisible one-point line
    assert (seen["title"], seen["x"], seen["y"]) == ("imm_toy: training loss", "optimiser step",
                                                     "loss (mean over each log interval)")
