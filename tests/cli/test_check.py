"""``fewstep check RECIPE``: a good recipe, one line per problem, --show."""
from __future__ import annotations

import pytest


def test_check_accepts_a_good_recipe(tiny, cli):
    res = cli("check", tiny)
    assert res.exit_code == 0 and "ok (fm on moons" in res.stdout
    res = cli("check", tiny, "--show", "--set", "train.lr=3e-4")
    assert "lr: 0.0003" in res.stdout and "sampler:" in res.stdout


@pytest.mark.parametrize("bad, expect", [
    ("width: 32", "width: [", ),
    ("name: fm", "name: fn"),
])
def test_bad_recipes_exit_2_with_one_line_and_no_traceback(tiny, write, bad, expect, cli):
    path = write("bad.yaml", tiny.read_text().replace(bad, expect))
    res = cli("check", path)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:") and "Traceback" not in res.stderr


def test_wrong_type_line(tiny, write, cli):
    path = write("bad.yaml", tiny.read_text().replace("width: 32", "width: wide"))
    res = cli("check", path)
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"{path}:2:22 network.width: input should be a valid integer, "
                                  "unable to parse string as an integer")


@pytest.mark.parametrize("edit, expect", [
    (("steps: 30,", "steps: true,"), ":5:9 train.steps: expected a number, not the boolean true"),
    (("lr: 1e-3", "lr: .inf"), ":5:54 train.lr: input should be a finite number"),
    (("lr: 1e-3", "lr: 1e-3, betas: [0.9, 1.5]"), "train.betas.1: input should be less than 1"),
    (("objective: {{name: fm}}", "objective: {{name: fm}}\nsampler: {{name: euler, schedule: eta, mid_etas: [400]}}"),
     "sampler.mid_etas: [400.0] outside (0.006036, 165.7)"),
    (("n_samples: 256", "n_samples: 256, n_samples: 128"), "duplicated key 'n_samples' (first at line 6;"),
])
def test_values_a_run_cannot_use_are_one_line_exit_2(tiny, write, cli, edit, expect):
    old, new = (part.replace("{{", "{").replace("}}", "}") for part in edit)
    path = write("bad.yaml", tiny.read_text().replace(old, new))
    res = cli("check", path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(str(path)) and expect in line, line


def test_files_a_valid_recipe_names_but_this_machine_lacks_are_noted_not_errors(cli, tmp_path):
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    res = cli("check", recipes / "imm_imagenet256_dit_s.yaml", "--set", f"data.root={tmp_path / 'lat'}",
              "--set", f"train.init={tmp_path / 'nope'}")
    assert res.exit_code == 0 and res.stdout.startswith(f"{recipes / 'imm_imagenet256_dit_s.yaml'}: ok")
    notes = res.stderr.strip().splitlines()
    assert notes == [
        f"note: data.root: {tmp_path / 'lat'} holds no encoded latents yet; make them with `fewstep encode --data "
        f"image_folder --set data.root=<images> --vae <VAE> --out {tmp_path / 'lat'}`",
        "note: eval.metrics.fid.reference: refs/imagenet256.npz does not exist yet; make it with `fewstep fid-ref "
        "IMAGES --out refs/imagenet256.npz`",
        f"note: train.init: {tmp_path / 'nope'} does not exist"]
    quiet = cli("check", recipes / "imm_toy.yaml")
    assert quiet.exit_code == 0 and quiet.stderr == ""  # toy data: nothing to fetch
