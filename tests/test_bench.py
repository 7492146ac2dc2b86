"""`make bench SMOKE=1`: the benchmark runs end to end at tiny sizes and writes its report and per-class results."""

import json

import pytest
from benchmarks import bench, render, targets

# every row but five of the six recipes: tests/test_recipes.py trains each recipe; here one shows the row works
SMOKE_ROWS = [row for row in bench.ALL_ROWS if row not in bench.RECIPES[1:]]


def test_bench_smoke_writes_the_report(tmp_path):
    out = tmp_path / "docs" / "BENCHMARKS.md"
    bench.main(["--smoke", "--cpu", "avx2", "--out", str(out), "--only", ",".join(SMOKE_ROWS)])
    text = out.read_text()
    for row in ("AVX2-only CPU", "peer: Kaggle tutorial recipe", "`fast`", "`quick`", "`make demo`",
                "| batch 64 |", "Inference:", "Machine:", "TensorFlow", "oneDNN instruction set in use: Intel AVX2",
                "### The tutorial recipes", f"| `{bench.RECIPES[0]}` |", f"| `{bench.RECIPES[1]}` | not measured yet",
                "### Ablation", "+ `ReduceLROnPlateau`", "+ member 2 (ensemble of 2"):
        assert row in text, row
    stored = json.loads((out.parent / "bench" / "avx2.json").read_text())
    assert stored["isa"]["figures"]["precision"] == "float32"  # the AVX2 stand-in really runs without bf16
    assert stored["demo"]["figures"][0]["plan"]["train_images_per_second"] > 0  # the demo plans from a budget
    recipe = stored[bench.RECIPES[0]]["figures"]
    assert recipe["epochs"] == [1] and recipe["params"] > 0 and 0 < recipe["accuracy"] <= 1
    ablation = stored["ablation"]["figures"]
    assert [r["members"] for r in list(ablation.values())[:3]] == [1, 1, 2]
    tta = ablation["test-time augmentation"]
    assert len(tta["plain"]) == len(tta["tta"]) == 2 and tta["tta_seconds"] > tta["plain_seconds"]
    # the run's own saved probabilities and a fresh plain prediction agree on the first member
    assert tta["plain"][0] == pytest.approx(ablation["plateau, augmentation"]["member_accuracy"][0], abs=0.002)


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
