"""`make bench SMOKE=1`: the benchmark runs end to end at tiny sizes and writes its report."""

from conftest import run_cli


def test_bench_smoke_writes_the_report(tmp_path):
    out = tmp_path / "docs" / "BENCHMARKS.md"
    run_cli("bench", "--smoke", "--out", out, check=True, timeout=900)
    text = out.read_text()
    for row in ("peer: Kaggle tutorial recipe", "`fast`", "`quick`", "`strong`", "| batch 64 |", "Inference:",
                "Ensemble size versus accuracy", "Machine:", "TensorFlow"):
        assert row in text, row
    assert (out.parent / "images" / "ensemble_size.png").stat().st_size > 5_000
