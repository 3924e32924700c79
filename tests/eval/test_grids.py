"""fewstep.eval.grids: sample_grid (points and images) and the training loop's on_samples callback."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fewstep.eval import grids, plots
from fewstep.eval.evaluate import sample
from fewstep.run.components import build_components
from fewstep.run.records import append_metrics
from fewstep.testing import tiny_recipe

TINY_EVAL = {"steps": [1, 2], "reference_steps": None, "n_samples": 64, "metrics": ["energy"]}


@pytest.fixture(scope="module")
def points():
    from fewstep.plugins import load_registries

    regs = load_registries(env={}, warn=False)
    return build_components(tiny_recipe(regs, eval=TINY_EVAL), regs, "cpu")


@pytest.fixture(scope="module")
def digits():
    from fewstep.plugins import load_registries

    regs = load_registries(env={}, warn=False)
    return build_components(tiny_recipe(regs, data={"name": "digits"}, eval=TINY_EVAL), regs, "cpu")


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.mark.parametrize("comps", ["points", "digits"])
def test_sample_grid_writes_a_png(comps, request, tmp_path):
    comps = request.getfixturevalue(comps)
    out = grids.sample_grid(comps, comps.flowmap, [1, 2], 128, 0, tmp_path / "deep" / "grid.png", title="t")
    assert out == tmp_path / "deep" / "grid.png"
    w, h = _png_size(out)
    assert w > 2 * h  # one row of three panels: data, 1 step, 2 steps


def _capture(monkeypatch, name):
    seen = {}

    def fake(panels, path, *, reference=None, title=None, **kw):
        seen.update(panels=panels, path=path, reference=reference, title=title)
        return path

    monkeypatch.setattr(plots, name, fake)
    return seen


def test_point_panels_are_the_samples_of_each_step_count_beside_fresh_data(points, monkeypatch, tmp_path):
    seen = _capture(monkeypatch, "scatter_grid")
    grids.sample_grid(points, points.flowmap, [1, 2], 100, 5, tmp_path / "g.png", title="run step 3")
    assert [label for label, _ in seen["panels"]] == ["euler 1 step (NFE 1)", "euler 2 steps (NFE 2)"]
    for (_, x), k in zip(seen["panels"], (1, 2)):
        torch.testing.assert_close(x, sample(points, points.flowmap, points.sampler, k, 100, 5)[0])
    ref = points.dataset.sample(100, torch.Generator().manual_seed(6)).x
    torch.testing.assert_close(seen["reference"], ref)
    assert seen["title"] == "run step 3" and seen["path"] == tmp_path / "g.png"


def test_image_panels_show_at_most_64_uint8_images_from_the_given_sampler(digits, monkeypatch, tmp_path, regs):
    from fewstep.eval.evaluate import sampler_named

    seen = _capture(monkeypatch, "image_grid")
    heun = sampler_named(digits, regs, "heun")
    grids.sample_grid(digits, digits.flowmap, [2], 500, 0, tmp_path / "g.png", sampler=heun)
    (label, imgs), = seen["panels"]
    assert label == "heun 2 steps (NFE 4)"  # Heun: two evaluations per step
    assert imgs.shape == (64, 1, 8, 8) and imgs.dtype == torch.uint8
    assert seen["reference"].shape == (64, 1, 8, 8) and seen["reference"].dtype == torch.uint8


def test_training_grids_callback_writes_samples_and_the_loss_curve(points, tmp_path):
    run = tmp_path / "run"
    messages = []
    on_samples = grids.training_grids(points, run, label="tiny", log=messages.append)
    ema_net = points.net
    ema_net.train()
    on_samples(5, ema_net)
    png = run / "samples" / "step_0000005.png"
    assert png.is_file() and messages == [f"samples: {png}"]
    assert not (run / "loss.png").exists()  # no metrics yet: no curve
    assert not ema_net.training  # sampled in eval mode
    for step in (1, 2, 3):
        append_metrics(run, {"step": step, "loss": 1.0 / step})
    on_samples(10, ema_net)
    assert (run / "samples" / "step_0000010.png").is_file()
    _png_size(run / "loss.png")


@pytest.mark.parametrize(("steps", "drawn"), [([1, 2, 4, 8, 16], [1, 2, 4, 8]), ([2, 3, 8], [2, 8]),
                                              ([3, 5, 6, 7, 9], [3, 5, 6, 7])])
def test_training_grids_draw_the_eval_step_counts_among_1_2_4_8(regs, monkeypatch, tmp_path, steps, drawn):
    comps = build_components(tiny_recipe(regs, eval={**TINY_EVAL, "steps": steps}), regs, "cpu")
    calls = []
    monkeypatch.setattr(grids, "sample_grid", lambda c, fm, k, n, seed, path, title=None: calls.append(
        (k, n, seed, path, title, fm.net)))
    net = torch.nn.Linear(2, 2)
    grids.training_grids(comps, tmp_path, label="lbl")(7, net)
    (k, n, seed, path, title, used), = calls
    assert k == drawn and n == grids.GRID_SAMPLES and seed == comps.recipe.eval.seed
    assert path == tmp_path / "samples" / "step_0000007.png" and title == "lbl step 7 (EMA)"
    assert used is net  # the EMA weights given, not the training network


def test_image_panels_show_up_to_the_cap_for_their_image_size(monkeypatch, tmp_path):
    import fewstep.eval.plots as plots
    from fewstep.eval.grids import image_cap, sample_grid
    from fewstep.plugins import get_registries
    from fewstep.run.components import build_components
    from fewstep.testing import tiny_recipe

    assert (image_cap(8), image_cap(32), image_cap(256), image_cap(4096)) == (256, 256, 64, 1)
    regs = get_registries()
    comps = build_components(tiny_recipe(regs, data={"name": "digits"}), regs, "cpu", objective=False)
    shown = []
    monkeypatch.setattr(plots, "image_grid", lambda panels, path, **kw: shown.append(
        (kw["per_panel"], [len(x) for _, x in panels])) or path)
    sample_grid(comps, comps.flowmap, [1], 300, 0, tmp_path / "a.png", max_images=256)
    sample_grid(comps, comps.flowmap, [1], 300, 0, tmp_path / "b.png")  # training grids: 64
    assert shown == [(256, [256]), (64, [64])]
