"""`make bench SMOKE=1`: the benchmark runs end to end at tiny sizes and writes its report and per-class results."""

import json

import pytest
from benchmarks import bench, render, targets

# every row but five of the six recipes: tests/test_recipes.py trains each recipe; here one shows the row works
SMOKE_ROWS = [row for row in bench.ALL_ROWS if row not in bench.RECIPES[1:]]
# the default suite's share: the budget curve the README shows, and the report around it (the demo row, a budgeted
# run as well, is in the slow test; tests/test_pipeline.py runs its download, train and evaluate)
QUICK_ROWS = ["isa", "curve"]


def _smoke(tmp_path, rows: list) -> tuple[str, dict]:
    out = tmp_path / "docs" / "BENCHMARKS.md"
    bench.main(["--smoke", "--cpu", "avx2", "--out", str(out), "--only", ",".join(rows)])
    cls = "avx2" if bench.cpu_classes()["avx2"] else "avx2-native"  # the stand-in, or a real AVX2-only CPU
    return out.read_text(), json.loads((out.parent / "bench" / f"{cls}.json").read_text())


def _check_common(text: str, stored: dict, tmp_path):
    cls = "avx2" if bench.cpu_classes()["avx2"] else "avx2-native"
    for row in (targets.CLASS_TITLES[cls], "Machine of the last run:", "TensorFlow",
                "oneDNN instruction set in use: Intel AVX2", "### The tutorial recipes",
                f"| `{bench.RECIPES[1]}` | not measured yet", "## Accuracy for a time budget",
                f"| {targets.CLASS_TITLES[cls]} | {targets.SMOKE_BUDGET} |"):
        assert row in text, row
    assert stored["isa"]["figures"]["precision"] == "float32"  # the AVX2 stand-in really runs without bf16
    point = stored["curve"]["figures"][0]
    assert point["budget"] == targets.SMOKE_BUDGET and point["plan"]["train_images_per_second"] > 0
    assert point["strong_images_per_second"] > 0  # what the point stands for, even where the plan skipped strong
    assert (tmp_path / "docs" / "images" / "budget_curve.png").stat().st_size > 0


def test_bench_smoke_writes_the_report_around_the_budget_rows(tmp_path):
    text, stored = _smoke(tmp_path, QUICK_ROWS)
    _check_common(text, stored, tmp_path)
    assert "| `quick` | not measured yet" in text and "### Ablation" not in text


@pytest.mark.slow
def test_bench_smoke_writes_the_report(tmp_path):
    text, stored = _smoke(tmp_path, SMOKE_ROWS)
    _check_common(text, stored, tmp_path)
    assert stored["demo"]["figures"][0]["plan"]["train_images_per_second"] > 0  # the demo plans from a budget
    recipe = stored[bench.RECIPES[0]]["figures"]
    assert recipe["epochs"] == [1] and recipe["params"] > 0 and 0 < recipe["accuracy"] <= 1
    for row in ("`make demo`", "peer: Kaggle tutorial recipe", f"| `{bench.RECIPES[0]}` |", "`fast`", "`quick`",
                "| batch 64 |", "two members at once", "of the matmul rate", "Inference:", "### Ablation",
                "+ `ReduceLROnPlateau`", "+ member 2 (ensemble of 2"):
        assert row in text, row
    ablation = stored["ablation"]["figures"]
    assert [r["members"] for r in list(ablation.values())[:3]] == [1, 1, 2]
    tta = ablation["test-time augmentation"]
    assert len(tta["plain"]) == len(tta["tta"]) == 2 and tta["tta_seconds"] > tta["plain_seconds"]
    # the run's own saved probabilities and a fresh plain prediction agree on the first member
    assert tta["plain"][0] == pytest.approx(ablation["plateau, augmentation"]["member_accuracy"][0], abs=0.002)


def test_the_strong_net_costs_its_multiply_adds_times_six_to_train():
    # conv3-32, conv3-32, conv5/2-32, conv3-64, conv3-64, conv5/2-64 (valid, valid, same; 26, 24, 12, 10, 8, 4 pixels
    # a side), conv4-128 to 1 x 1, dense 128 -> 10
    multiply_adds = (26 * 26 * 32 * 9 + 24 * 24 * 32 * 9 * 32 + 12 * 12 * 32 * 25 * 32 + 10 * 10 * 64 * 9 * 32
                     + 8 * 8 * 64 * 9 * 64 + 4 * 4 * 64 * 25 * 64 + 128 * 16 * 64 + 128 * 10)
    assert bench.training_flops("strong") == 6 * multiply_adds


def test_the_rates_table_sets_the_trainer_against_the_matmul_rate():
    pair = {"plain": [500.0, 520.0], "project": [600.0, 610.0]}
    rates = {"flops_per_image": 100e6, "two_at_once": [700.0, 720.0, 710.0], "matmul_float32": 100.0,
             "matmul_trainer": 100.0, "trainer_precision": "float32"}
    lines = render.render_rates({"64": pair, "rates": rates}, "avx2")
    assert "| matmul, float32 (the trainer's precision) | | 100 | 100% | | |" in lines
    assert "| plain Keras `model.fit`, float32, batch 64 | 510 (range 500-520, n=2) | 51 | 51% | | |" in lines
    assert lines[-1].endswith("| 710 (range 700-720, n=3) | 71 | 71% | >= 70% | PASS |")
    rates = {**rates, "matmul_trainer": 200.0, "trainer_precision": "bfloat16"}
    lines = render.render_rates({"64": pair, "rates": rates}, "bf16")
    assert "| matmul, float32 | | 100 | | | |" in lines and lines[-1].endswith("| 36% | >= 45% | FAIL |")


def test_every_recipe_names_its_authors_accuracy():
    assert len(bench.RECIPES) == 6
    reported = {recipe: bench.reported_accuracy(recipe) for recipe in bench.RECIPES}
    assert reported["recipes/lenet-tutorial"] == pytest.approx(0.9874)
    assert reported["recipes/kaggle-rmsprop"] == pytest.approx(0.99471)  # a leaderboard score, not a percentage
    assert all(0.9 < value < 1 for value in reported.values())


def _recipe_entry(accuracy: float, reported: float) -> dict:
    return {"figures": {"accuracy": accuracy, "reported": reported, "params": 1234, "seconds": 10.0}, "date": "d"}


def test_a_recipe_off_by_more_than_the_tolerance_says_why():
    explained, unexplained = "recipes/kaggle-rmsprop", "recipes/simple-cnn"
    data = {explained: _recipe_entry(0.9900, 0.99471), unexplained: _recipe_entry(0.9850, 0.9906),
            "recipes/ann-baseline": _recipe_entry(0.9780, 0.9758)}
    lines = {line.split("|")[1].strip(): line for line in render.render_recipes(data, "bf16") if line.startswith("| `")}
    assert lines["`recipes/ann-baseline`"].endswith("| +0.22 | 10 | yes | d |")
    close = render.render_recipes({explained: _recipe_entry(0.9930, 0.99471)}, "bf16")
    assert f"| yes: {targets.RECIPE_NOTES[explained]} |" in "\n".join(close)  # a known difference is said anyway
    assert f"| no: {targets.RECIPE_NOTES[explained]} |" in lines[f"`{explained}`"]
    assert "| no: not explained yet |" in lines[f"`{unexplained}`"]
    assert "| -0.56 |" in lines[f"`{unexplained}`"]


def _host(cpu: str, flags=()) -> dict:
    return {"cpu": cpu, "cores": 2, "cpu_flags": list(flags), "python": "3", "tensorflow": "2", "keras": "3",
            "numpy": "2"}


def _point(budget: str, accuracy: float) -> dict:
    plan = {"architecture": "lite", "members": 2, "epochs": 20, "jobs": 2, "predicted_accuracy": accuracy,
            "speeds": {"strong": {"train_images_per_second": 860.0}}}
    return {"budget": budget, "accuracy": accuracy, "seconds": 100.0, "plan": plan}


def test_a_curve_point_keeps_the_machine_and_command_it_was_measured_with(tmp_path):
    bench.save("avx2", {"curve": [_point("20m", 0.9956)]}, _host("Old CPU"), "make bench ONLY=curve", tmp_path)
    stored = bench.save("avx2", {"curve": [_point("2m", 0.9930), _point("20m", 0.9960)]}, _host("New CPU"),
                        "make bench ONLY=curve ARGS='--budgets 2m,20m'", tmp_path)
    assert [(p["budget"], p["accuracy"], p["machine"]) for p in stored["curve"]["figures"]] == [
        ("2m", 0.9930, "New CPU, 2 cores"), ("20m", 0.9960, "New CPU, 2 cores")]  # re-measured: replaced
    stored = bench.save("avx2", {"curve": [_point("4m", 0.9940)]}, _host("Third CPU"), "make bench ONLY=curve",
                        tmp_path)
    lines = {line.split("|")[2].strip(): line for line in render.render_curve({"avx2-native": stored})[0]
             if line.startswith(f"| {targets.CLASS_TITLES['avx2-native']}")}
    assert lines["2m"].endswith(", New CPU, 2 cores |") and lines["4m"].endswith(", Third CPU, 2 cores |")
    text, _ = render.render({"avx2-native": stored})
    assert "`make bench ONLY=curve ARGS='--budgets 2m,20m'`" in text  # the older points' command stays listed


def test_the_avx2_stand_in_and_a_real_avx2_cpu_keep_their_own_rows(tmp_path):
    recipe = {"accuracy": 0.9900, "seconds": 100.0, "reported": 0.99, "params": 1, "epochs": [1]}
    bench.save("avx2", {"curve": [_point("2m", 0.9921)], bench.RECIPES[0]: {**recipe, "accuracy": 0.9910}},
               _host("Bf16 CPU", ["avx512_bf16"]), "c", tmp_path)
    native = bench.save("avx2", {"curve": [_point("2m", 0.9930)], bench.RECIPES[0]: recipe}, _host("Zen 3"), "c",
                        tmp_path)
    stand_in = json.loads((tmp_path / "avx2.json").read_text())
    assert json.loads((tmp_path / "avx2-native.json").read_text()) == native
    assert [p["accuracy"] for p in stand_in["curve"]["figures"]] == [0.9921]  # not replaced by the real CPU's
    points = {p["class"]: p for p in render.curve_points({"avx2": stand_in, "avx2-native": native})}
    assert points["avx2"]["target"] == targets.CURVE_TARGETS[("avx2", "2m")]  # the target is the stand-in's
    assert points["avx2-native"]["target"] is None
    # each point is set against the recipes measured on its own machine
    assert points["avx2"]["recipe"][1] == 0.9910 and points["avx2-native"]["recipe"][1] == 0.9900
    assert not points["avx2"]["pass"] and points["avx2-native"]["pass"]


def test_a_curve_point_shows_the_epochs_its_members_trained_where_the_budget_filled_or_cut_them():
    assert render._plan_text(_point("9m", 0.995)["plan"], [20, 20]) == "2 x 20 ep of lite, 2 at once"
    assert render._plan_text(_point("9m", 0.995)["plan"], [30, 30]) == "2 x 20 ep (trained 30) of lite, 2 at once"
    assert render._plan_text(_point("9m", 0.995)["plan"], [18, 27]) == "2 x 20 ep (trained 18-27) of lite, 2 at once"
