"""Bench files (fewstep/bench/spec.py): checks parsed, every expanded recipe validated before training,
each problem one line naming the bench field."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fewstep.bench import load_bench
from fewstep.cli import app
from fewstep.errors import RecipeError

runner = CliRunner()

@pytest.mark.parametrize("edit, expected", [
    (("checks: [", "checks: [\"energy: ct@1 < fm@1\", "), "tiny.yaml:10:10 checks[0]: unknown entry 'ct'"),
    (("checks: [", "checks: [\"energy[mons]: imm@1 < fm@1\", "),
     "tiny.yaml:10:10 checks[0]: unknown data set 'mons' (data: eight_gaussians, moons)"),
    (("imm: {recipe: imm.yaml}", "imm: {recipe: nope.yaml}"), "tiny.yaml:4:9 entries.imm.recipe: no such file"),
    (("imm: {recipe: imm.yaml}", "imm: {recipe: imm.yaml, run: old}"),
     "tiny.yaml:4:3 entries.imm: give either recipe (a recipe to train) or run (a finished run to evaluate)"),
    (("imm: {recipe: imm.yaml}", "imm: {label: IMM}"), "entries.imm: give either recipe"),
    (("imm: {recipe: imm.yaml}", "imm: {run: nowhere}"), "tiny.yaml:4:9 entries.imm.run: "),
    (("train.steps: 20", "train.steps: -3"), "tiny.yaml shared.train.steps) train.steps: input should be greater than"),
    (("eval: {", "evals: {"), "tiny.yaml:9:1 evals: unknown field"),
    (("name: moons, noise: 0.1", "name: mons"),
     "tiny.yaml data) data.name: unknown dataset 'mons'; did you mean 'moons'?"),
])
def test_bench_file_errors_are_one_line_each_exit_2(bench_file, edit, expected):
    bench_file.write_text(bench_file.read_text().replace(*edit))
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 2, res.output
    assert expected in res.output and "Traceback" not in res.output


def test_check_flag_validates_every_expanded_recipe(bench_file, regs):
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 0 and res.output.count("ok  ") == 4
    bench = load_bench(bench_file, None, regs)
    expected = {(e, d) for e in ("fm", "imm") for d in ("eight_gaussians", "moons")}
    assert {(j.entry, j.data) for j in bench.jobs} == expected
    assert all(j.recipe.train.steps == 20 and j.recipe.network.width == 16 for j in bench.jobs)
    assert bench.jobs[1].recipe.data.noise == 0.1


def test_recipe_errors_name_the_bench_field_that_caused_them(bench_file, regs):
    bench_file.write_text(bench_file.read_text().replace("seeds: [0, 1]}", "seeds: []}"))
    with pytest.raises(RecipeError, match="eval.seeds"):
        load_bench(bench_file, None, regs)


@pytest.mark.parametrize("old, new, expect", [
    ("seeds: [0, 1]}", "seeds: [0, true]}", "eval.seeds.1: expected a number, not the boolean true"),
    ("steps: [1, 2], reference", "steps: [0, 2], reference",
     "eval.steps.0: input should be greater than or equal to 1"),
    ("steps: [1, 2], reference", "steps: [], reference", "eval.steps: list should have at least 1 item"),
    ("n_samples: 128", "n_samples: .inf", "eval.n_samples: input should be a finite number"),
    ("train.steps: 20", "train.steps: false", "shared.train.steps) train.steps: expected a number"),
])
def test_bad_bench_values_are_one_line_each(bench_file, old, new, expect):
    bench_file.write_text(bench_file.read_text().replace(old, new))
    res = runner.invoke(app, ["bench", str(bench_file), "--check"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()  # a shared override is reported once per recipe it reaches
    assert lines and all(expect.lower() in line.lower() for line in lines), res.output


def test_set_joins_the_shared_section_and_only_keeps_entries(bench_file, regs):
    bench = load_bench(bench_file, None, regs, overrides=["train.steps=7", "network.width=8"], only=["imm"])
    assert {j.entry for j in bench.jobs} == {"imm"} and len(bench.jobs) == 2  # both data sets
    assert all(j.recipe.train.steps == 7 and j.recipe.network.width == 8 for j in bench.jobs)
    with pytest.raises(RecipeError, match=r"--only fn: no such entry in .*tiny.yaml; did you mean 'fm'\? "
                                          r"\(entries: fm, imm\)"):
        load_bench(bench_file, None, regs, only=["fn"])
    res = runner.invoke(app, ["bench", str(bench_file), "--check", "--set", "train.steps=5", "--only", "fm"])
    assert res.exit_code == 0 and res.output.count("ok  fm on") == 2 and "imm" not in res.output
