"""``fewstep bench BENCH``: --check lists the runs without training; a failed check exits 1 with --strict."""
from __future__ import annotations

BENCH = """\
entries:
  fm: {recipe: tiny.yaml, label: FM}
  fm_wide: {recipe: tiny.yaml, set: {network.width: 48}}
data: [moons, eight_gaussians]
shared: {train.steps: 10}
eval: {steps: [1], reference_steps: null, n_samples: 64, metrics: [energy], seeds: [0]}
checks: ["energy: fm@1 < 0.000001 * fm_wide@1"]
"""


def test_check_lists_every_run_and_trains_nothing(tiny, write, tmp_path, cli):
    bench = write("b.yaml", BENCH)
    res = cli("bench", bench, "--check", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0] == f"ok  fm on moons seed 0 -> {tmp_path / 'out' / 'runs' / 'fm-moons-s0'}"
    assert not (tmp_path / "out").exists()


def test_strict_exits_1_when_a_check_fails(tiny, write, tmp_path, cli):
    bench = write("b.yaml", BENCH.replace("data: [moons, eight_gaussians]", "data: [moons]"))
    res = cli("bench", bench, "--out", tmp_path / "out", "-q")
    assert res.exit_code == 0 and "✗ moons: energy: fm@1 < 0.000001 * fm_wide@1" in res.stdout
    res = cli("bench", bench, "--out", tmp_path / "out", "-q", "--strict")  # evaluations cached: instant
    assert res.exit_code == 1
