"""What `make bench` measures and what each row must reach: shared by measuring (bench.py) and rendering (render.py)."""

from digits.config import CONFIGS_DIR, PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
REPORT = DOCS / "BENCHMARKS.md"
RESULTS = DOCS / "bench"
README = PROJECT_ROOT / "README.md"
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
# The Kaggle-shaped layouts of MNIST's 70,000 images, by split seed: decisions (the planner's table, which technique
# stays) read the decision layout's answers; reported figures (the curve, the demo row) come from the report layout,
# whose answers no decision reads (docs/PERFORMANCE.md, 2026-12-05 evening).
DECISION_SEED = 2024  # `make demo`'s own split (`digits download --source mnist`)
REPORT_SEED = 7
DEMO_BUDGET = "9m"  # `make demo`'s training budget: download and scoring fit in the rest of 10 minutes
# row -> what it must reach: test accuracy, wall seconds, and/or a fraction of the peer's time; repeats; classes
TARGETS = {
    "fast": {"accuracy": 0.9955, "peer_ratio": 0.6, "repeats": 3},
    "fast-onecycle": {"repeats": 1},  # the same net and epochs with the one-cycle schedule: the choice, shown
    "quick": {"accuracy": 0.9965, "seconds": 600, "repeats": 1},
    "demo": {"accuracy": 0.9960, "seconds": 600, "repeats": 1},
    "strong": {"accuracy": 0.9975, "seconds": 3600, "repeats": 1, "classes": ("bf16",)},
}
THROUGHPUT_TARGET = {"bf16": 2.0, "avx2": 1.5, "avx2-native": 1.5}
# the trainer's GFLOP/s, two members at once as planned, over the matmul rate in its precision (issue 39)
MATMUL_SHARE_TARGET = {"bf16": 0.45, "avx2": 0.70, "avx2-native": 0.70}
WARM_STEPS = 20  # training steps left out of a throughput figure: tracing, oneDNN's first calls, the pipeline filling
# The tutorial recipes (configs/recipes/*.toml): one row each, named as its config
RECIPES = sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.glob("recipes/*.toml"))
RECIPE_TOLERANCE = 0.003  # a reproduced recipe lands within 0.3 points of its author's figure, or the table says why
# What differs from the author's own measurement: said beside the recipe, and the reason wherever one lands off
RECIPE_NOTES = {
    "recipes/kaggle-rmsprop": "the author's figure is Kaggle's public leaderboard (part of Kaggle's 28,000 test "
                              "rows, after training on its 42,000), not MNIST's 10,000 test images after 60,000; "
                              "ReduceLROnPlateau's factor and patience are the pipeline's (the post gives none)",
    "recipes/tf-tutorial": "the author trained on all 60,000 rows; here 8% are held out",
}
# The ablation: `quick`'s recipe without a budget, one step added at a time; its last run has ABLATION_MEMBERS
ABLATION_EPOCHS, ABLATION_MEMBERS = 12, 3
NO_AUGMENTATION = ["--set", "rotation_degrees=0", "--set", "zoom=0", "--set", "shift=0"]
# The accuracy-versus-budget curve: `quick` (the planner) on the Kaggle layout for each budget, per CPU class
CURVE_BUDGETS = ("2m", "4m", "9m", "20m")
LONG_BUDGETS = {"bf16": ("60m",)}  # and, on a class fast enough to show the top of the curve, these too
# the issues' targets, by (class, budget), on the report layout; every point must also beat the best recipe in its time
CURVE_TARGETS = {("avx2", "2m"): 0.9945, ("bf16", "20m"): 0.9972, ("bf16", "60m"): 0.9975}
SLOW_LAPTOP = 430  # img/s of the strong net on a real AVX2-only CPU (2-core Zen 3): what a budget point stands for
ALL_ROWS = ["isa", "throughput", "peer", *TARGETS, "inference", *RECIPES, "ablation", "curve", "parallel", "table"]
GROUPS = {"recipes": RECIPES}  # --only recipes: every recipe row
SMOKE_BUDGET = "15s"  # the budgeted rows' (demo, curve) in `make bench SMOKE=1`
SMOKE_SET = ["--set", "epochs=1", "--set", "members=1", "--set", "architectures=lenet", "--set", "budget="]
# Each class keeps its rows in docs/bench/<class>.json. AVX2 is measured two ways, kept apart: on a bf16 CPU with
# oneDNN capped to AVX2 (the stand-in: a laptop's instructions on a newer, faster core), and on a real AVX2-only CPU
CLASS_TITLES = {"bf16": "CPU with AVX512-BF16 (native)",
                "avx2": "AVX2 stand-in (a bf16 CPU capped to AVX2)",
                "avx2-native": "AVX2-only CPU (native)"}
