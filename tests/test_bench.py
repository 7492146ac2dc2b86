"""`make bench SMOKE=1`: the benchmark runs end to end at tiny sizes and writes its report and per-class results."""

import json

from benchmarks import bench


def test_bench_smoke_writes_the_report(tmp_path):
    out = tmp_path / "docs" / "BENCHMARKS.md"
    bench.main(["--smoke", "--cpu", "avx2", "--out", str(out)])
    text = out.read_text()
    for row in ("AVX2-only CPU", "peer: Kaggle tutorial recipe", "`fast`", "`quick`", "`make demo`",
                "| batch 64 |", "Inference:", "Machine:", "TensorFlow", "oneDNN instruction set in use: Intel AVX2"):
        assert row in text, row
    stored = json.loads((out.parent / "bench" / "avx2.json").read_text())
    assert stored["isa"]["figures"]["precision"] == "float32"  # the AVX2 stand-in really runs without bf16
    assert stored["demo"]["figures"][0]["plan"]["train_images_per_second"] > 0  # the demo plans from a budget
