import torch

from fewstep.eval.plots import loss_curve, scatter_grid

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
