"""`make bench`: the configs against the tutorial recipe, side by side, on each CPU class; rewrites BENCHMARKS.md.

Each CPU class keeps its figures in docs/bench/<class>.json (a run updates only the rows it measured, each row
stamped with its date and commit), and BENCHMARKS.md plus README's summary are rendered from those files.
On a bf16 CPU an AVX2-only one is stood in for by capping oneDNN (ONEDNN_MAX_CPU_ISA=AVX2, which also turns bf16
off); a real AVX2-only CPU keeps its rows apart, as the class avx2-native.
"""

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from benchmarks import accuracy_table
from benchmarks.render import plot_curve, render, write_readme_blocks
from benchmarks.targets import (
    ABLATION_EPOCHS,
    ABLATION_MEMBERS,
    ALL_ROWS,
    AVX2_ENV,
    CLASS_TITLES,
    CURVE_BUDGETS,
    DECISION_SEED,
    DEMO_BUDGET,
    GROUPS,
    LONG_BUDGETS,
    NO_AUGMENTATION,
    RECIPES,
    REPORT,
    REPORT_SEED,
    SMOKE_BUDGET,
    SMOKE_SET,
    TARGETS,
    WARM_STEPS,
)

from digits import atomic, mnist, runs
from digits.config import CONFIGS_DIR, PROJECT_ROOT, Paths, budget_seconds


def has_bf16(flags) -> bool:
    """Whether CPU flags (/proc/cpuinfo's text, or a machine's `cpu_flags`) include bf16: then AVX2 is stood in for."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def stored_class(cls: str, flags) -> str:
    """The class a machine's rows are kept as: AVX2 on a real AVX2-only CPU is apart from the stand-in's."""
    return "avx2-native" if cls == "avx2" and not has_bf16(flags) else cls


def cpu_classes() -> dict:
    """The CPU classes this machine can measure: its own, and AVX2 (emulated) when it has more than AVX2."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if has_bf16(flags):
        return {"bf16": {}, "avx2": AVX2_ENV}
    return {"avx2": {}}


@contextlib.contextmanager
def environment(env: dict):
    """os.environ with `env` added, for the processes started inside; as it was afterwards."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def in_fresh_process(env: dict, func, *args):
    """`func(*args)` in a new interpreter whose environment adds `env`: clean TensorFlow state, oneDNN set anew."""
    with environment(env), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def isa_in_use() -> dict:
    """The instruction set oneDNN dispatches to here, read from its verbose log of one convolution."""
    from digits.quiet import import_tensorflow

    tf = import_tensorflow()
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            tf.nn.conv2d(tf.ones([1, 28, 28, 1]), tf.ones([3, 3, 1, 8]), 1, "SAME").numpy()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode(errors="replace").splitlines()
    isa = next((line.split("isa:", 1)[1].split(",")[0].strip() for line in lines if "isa:" in line), "unknown")
    from digits.member import compute_policy

    return {"isa": isa, "precision": compute_policy(True)}


def machine() -> dict:
    """The CPU, cores and library versions the figures were measured with."""
    from digits import manifest

    return {**manifest.host_info(), **manifest.versions()}


def prepare_data(bench_dir: Path, layout: str, smoke: bool, seed: int = DECISION_SEED) -> Paths:
    """Competition-shaped MNIST CSVs with held-back answers, built offline from the checked IDX files (the Kaggle
    layout split with `seed`)."""
    folder = bench_dir / (layout if seed == DECISION_SEED else f"{layout}-seed{seed}")
    paths = Paths(data_dir=folder / "data", models_dir=folder / "models", submissions_dir=folder / "submissions")
    rows = (3000, 1000) if smoke else (0, 0)
    mnist.write_competition_csvs(mnist.fetch_idx(mnist.default_cache_dir()), paths.data_dir, layout, seed=seed,
                                 train_rows=rows[0], test_rows=rows[1])
    return paths


def _digits(*args, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "digits", *map(str, args)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env={**os.environ, **env})
    if out.returncode != 0:
        raise RuntimeError(f"digits {' '.join(map(str, args))} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out


def _path_args(paths: Paths) -> list:
    return ["--data-dir", paths.data_dir, "--models-dir", paths.models_dir, "--submissions-dir", paths.submissions_dir]


def time_train(config: str, paths: Paths, env: dict, extra=()) -> dict:
    """Wall time of `digits train` from reading the CSVs to the validated submission, and its test accuracy."""
    from digits.submission import accuracy

    started = time.perf_counter()
    out = _digits("train", "--config", config, "--force", *_path_args(paths), *extra, env=env)
    seconds = time.perf_counter() - started
    submission = out.stdout.strip().splitlines()[-1]
    run_dir = paths.models_dir / Path(submission).stem
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    plan = json.loads((run_dir / runs.MANIFEST_FILE).read_text()).get("budget_plan")
    members = _member_accuracy(run_dir, paths)
    return {"seconds": seconds, "accuracy": accuracy(submission, paths.answers_csv), "run": run_dir.name,
            "cv": metrics["cv"], "member_accuracy": float(np.mean(members)), "members": len(metrics["members"]),
            "epochs": [m["epochs_run"] for m in metrics["members"]], "plan": plan}


def time_demo(bench_dir: Path, env: dict, smoke: bool) -> dict:
    """`make demo`'s three steps, timed together: Kaggle-shaped CSVs, budgeted training, scoring (on the report
    layout, whose answers no decision reads)."""
    paths = Paths(data_dir=bench_dir / "demo" / "data", models_dir=bench_dir / "demo" / "models",
                  submissions_dir=bench_dir / "demo" / "submissions")
    started = time.perf_counter()
    rows = ["--train-rows", 3000, "--test-rows", 1000] if smoke else []
    _digits("download", "--source", "mnist", "--layout", "kaggle", "--seed", REPORT_SEED, "--force", *rows,
            *_path_args(paths), env=env)
    result = time_train("quick", paths, env, ["--budget", SMOKE_BUDGET if smoke else DEMO_BUDGET])
    _digits("evaluate", "latest", *_path_args(paths), env=env)
    return {**result, "seconds": time.perf_counter() - started, "split_seed": REPORT_SEED}


def peer_recipe(data_dir: str, epochs: int = 30, steps: int = 640, out_csv: str = "peer.csv") -> dict:
    """The Kaggle tutorial recipe most people start from, in plain Keras: CSV in, submission out, timed."""
    started = time.perf_counter()
    import keras
    import pandas as pd
    import tensorflow as tf
    from keras import layers
    from sklearn.model_selection import train_test_split

    train = pd.read_csv(Path(data_dir) / "train.csv")
    test = pd.read_csv(Path(data_dir) / "test.csv")
    y = train.pop("label").to_numpy()
    x = (train.to_numpy(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    x_test = (test.to_numpy(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.08, random_state=2, stratify=y)
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(30, 5, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(15, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Dropout(0.2), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dense(50, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.RMSprop(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    augment = keras.Sequential([layers.RandomRotation(10 / 360), layers.RandomZoom(0.1),
                                layers.RandomTranslation(0.1, 0.1)])
    dataset = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train)).repeat().batch(64)
               .map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    plateau = keras.callbacks.ReduceLROnPlateau("val_accuracy", patience=3, factor=0.5, min_lr=1e-5)
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, validation_data=(x_val, y_val), callbacks=[plateau],
              verbose=0)
    labels = model.predict(x_test, batch_size=1024, verbose=0).argmax(1)
    pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels}).to_csv(out_csv, index=False)
    return {"seconds": time.perf_counter() - started}


def plain_strong_net():
    """The strong net as the public kernel writes it, in plain Keras layers: the throughput baseline."""
    import keras
    from keras import layers

    stack = [keras.Input((28, 28, 1))]
    for filters in (32, 64):
        stack += [layers.Conv2D(filters, 3, activation="relu"), layers.BatchNormalization(),
                  layers.Conv2D(filters, 3, activation="relu"), layers.BatchNormalization(),
                  layers.Conv2D(filters, 5, strides=2, padding="same", activation="relu"),
                  layers.BatchNormalization(), layers.Dropout(0.4)]
    stack += [layers.Conv2D(128, 4, activation="relu"), layers.BatchNormalization(), layers.Flatten(),
              layers.Dropout(0.4), layers.Dense(10, activation="softmax")]
    return keras.Sequential(stack)


def throughput(mode: str, steps: int = 200, batch_size: int = 64, config: str = "strong", threads: int = 0) -> dict:
    """Steady-state training images/s of the strong net: `plain` model.fit float32, or `project` (the trainer), on
    `threads` intra-op threads (0: every core).

    Both are timed alike, by the ends of the calls into TensorFlow, after the first `WARM_STEPS` or first call.
    """
    import dataclasses

    from digits.config import load_config
    from digits.data import to_images
    from digits.member import build_model, keras, make_dataset, setup_tensorflow

    cfg = dataclasses.replace(load_config(config), batch_size=batch_size, mixed_precision=mode == "project")
    setup_tensorflow(cfg, seed=1, threads=threads)
    x_train, y_train, _, _ = mnist.load_all(mnist.fetch_idx(mnist.default_cache_dir()))
    images, labels = to_images(x_train[: steps * batch_size]), y_train[: steps * batch_size].astype(np.int32)
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    if mode == "plain":
        model = plain_strong_net()
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(images, labels, batch_size=batch_size, epochs=1, callbacks=[clock], verbose=0)
        per_call = 1
    else:
        model = build_model(cfg, "strong", steps)
        model.fit(make_dataset(images, labels, cfg, 1, 0, 1), steps_per_epoch=steps, callbacks=[clock], verbose=0)
        per_call = cfg.steps_per_execution
    skip = min(max(1, WARM_STEPS // per_call), len(ends) - 2)  # smoke runs have few calls
    return {"images_per_second": (len(ends) - 1 - skip) * per_call * batch_size / (ends[-1] - ends[skip])}


def members_at_once(env: dict, jobs: int, steps: int, batch_size: int) -> float:
    """Images/s of `jobs` trainers at once, one process and cores // jobs threads each, as `digits train` runs
    members side by side: the sum of their steady-state rates."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with environment(env), ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(throughput, "project", steps, batch_size, "strong", threads) for _ in range(jobs)]
        return sum(future.result()["images_per_second"] for future in futures)


def training_flops(architecture: str = "strong") -> int:
    """FLOPs to train on one image: 2 per multiply-add of each conv and dense layer, from the layer shapes, times 3
    (the forward pass, and the backward pass's gradients of the inputs and of the weights)."""
    from digits.models import layers, make_model

    multiply_adds = 0
    for layer in make_model(architecture).layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, channels = layer.output.shape
            multiply_adds += height * width * channels * math.prod(layer.kernel_size) * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            multiply_adds += layer.input.shape[-1] * layer.units
    return 6 * multiply_adds


def matmul_rate(dtype: str, size: int = 4096, repeats: int = 8) -> float:
    """GFLOP/s of TensorFlow's size x size matmul in `dtype` on every core: the rate a trainer's convolutions could
    at best reach here."""
    from digits.quiet import import_tensorflow

    tf = import_tensorflow()
    a, b = (tf.cast(tf.random.stateless_uniform([size, size], seed=[1, i]), dtype) for i in (0, 1))
    tf.linalg.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def inference(run_dir: str, rows: int = 28_000) -> dict:
    """Images/s of the whole ensemble of `run_dir` predicting `rows` test images."""
    from digits.data import to_images
    from digits.member import predict_probs
    from digits.models import load_model

    _, _, x_test, _ = mnist.load_all(mnist.fetch_idx(mnist.default_cache_dir()))
    images = to_images(np.resize(x_test, (rows, 784)))
    models = [load_model(p) for p in sorted(Path(run_dir).glob(f"{runs.MEMBERS_DIR}/*/{runs.MODEL_FILE}"))]
    for model in models:
        predict_probs(model, images[:2048])
    started = time.perf_counter()
    for model in models:
        predict_probs(model, images)
    seconds = time.perf_counter() - started
    return {"members": len(models), "rows": rows, "images_per_second": rows / seconds, "seconds": seconds}


def reported_accuracy(recipe: str) -> float:
    """The author's accuracy, as the recipe config's first line gives it ('reported 98.74%' or 'reported 0.99471')."""
    first_line = (CONFIGS_DIR / f"{recipe}.toml").read_text().splitlines()[0]
    found = re.search(r"reported (\d+(?:\.\d+)?)(%?)", first_line)
    if not found:
        raise ValueError(f"{recipe}.toml: its first line names no reported accuracy: {first_line!r}")
    return float(found[1]) / (100 if found[2] else 1)


def parameter_count(config: str) -> int:
    """Parameters of the config's first network, as `digits describe` counts them."""
    from digits.config import load_config
    from digits.models import make_model

    cfg = load_config(config)
    return make_model(cfg.architectures[0], l2=cfg.l2, dropout=cfg.dropout).count_params()


def time_recipe(recipe: str, paths: Paths, env: dict, smoke: bool) -> dict:
    """One tutorial recipe trained by the pipeline, as its config says (smoke: one epoch)."""
    result = time_train(recipe, paths, env, ["--set", "epochs=1"] if smoke else [])
    return {**result, "params": in_fresh_process(env, parameter_count, recipe), "reported": reported_accuracy(recipe)}


def tta_accuracy(run_dir: str, data_dir: str) -> dict:
    """Test accuracy by ensemble size, predicted plainly and with test-time augmentation, and each one's seconds."""
    from digits import data, ensemble, submission
    from digits.member import predict_probs
    from digits.models import load_model

    _, _, test_pixels, _ = data.read_inputs(data_dir)
    images, truth = data.to_images(test_pixels), submission.read(Paths(data_dir=Path(data_dir)).answers_csv)
    probs, seconds = {False: [], True: []}, {False: 0.0, True: 0.0}
    for path in sorted(Path(run_dir).glob(f"{runs.MEMBERS_DIR}/*/{runs.MODEL_FILE}")):
        model = load_model(path)
        predict_probs(model, images[:2048])  # traces the prediction step
        for tta in probs:
            started = time.perf_counter()
            probs[tta].append(predict_probs(model, images, tta=tta))
            seconds[tta] += time.perf_counter() - started
    curve = {tta: [float(np.mean(ensemble.average(p[: k + 1]).argmax(1) == truth)) for k in range(len(p))]
             for tta, p in probs.items()}
    return {"rows": len(truth), "plain": curve[False], "tta": curve[True],
            "plain_seconds": seconds[False], "tta_seconds": seconds[True]}


def ablation(paths: Paths, env: dict, smoke: bool, log=print) -> dict:
    """`quick`'s recipe built up a step at a time: augmentation, ReduceLROnPlateau, test-time augmentation, members.

    Member k of the last run has the seed of member k anywhere, so its first member is the one-member step.
    """
    size = ["--set", "epochs=1", "--set", "architectures=lenet"] if smoke else ["--set", f"epochs={ABLATION_EPOCHS}"]
    fixed = ["--set", "budget=", *size]
    steps = {"constant, no augmentation": ["--set", "members=1", "--set", "schedule=constant", *NO_AUGMENTATION],
             "constant, augmentation": ["--set", "members=1", "--set", "schedule=constant"],
             "plateau, augmentation": ["--set", f"members={2 if smoke else ABLATION_MEMBERS}"]}
    results = {}
    for step, extra in steps.items():
        log(f"  ablation: {step}")
        result = time_train("quick", paths, env, [*fixed, *extra])
        metrics = json.loads((paths.models_dir / result["run"] / runs.METRICS_FILE).read_text())
        result["member_seconds"] = [m["train_seconds"] + m["predict_seconds"] for m in metrics["members"]]
        result["member_accuracy"] = _member_accuracy(paths.models_dir / result["run"], paths)
        result["architecture"] = metrics["members"][0]["architecture"]
        results[step] = result
    last = paths.models_dir / results["plateau, augmentation"]["run"]
    results["test-time augmentation"] = in_fresh_process(env, tta_accuracy, str(last), str(paths.data_dir))
    return results


def _member_accuracy(run_dir: Path, paths: Paths) -> list[float]:
    """Each member's test accuracy alone, from its saved probabilities."""
    from digits import submission

    truth = submission.read(paths.answers_csv)
    return [float(np.mean(np.load(runs.member_dir(run_dir, i) / runs.TEST_PROBS_FILE).argmax(1) == truth))
            for i in runs.finished_members(run_dir)]


def _accuracy(csv: Path, paths: Paths) -> float:
    from digits.submission import accuracy

    return accuracy(csv, paths.answers_csv)


def measure(cls: str, env: dict, rows: list, smoke: bool, most: int = 0, log=print, budgets=(), points=None) -> dict:
    """Every requested row on one CPU class (at most `most` repeats each, if set; the curve's `budgets` and the
    table's `points` if given); returns {row: figures}."""
    bench_dir = PROJECT_ROOT / "build" / ("bench-smoke" if smoke else "bench")
    official = prepare_data(bench_dir, "official", smoke)
    results = {}
    if "isa" in rows:
        results["isa"] = in_fresh_process({**env, "ONEDNN_VERBOSE": "1"}, isa_in_use)
        log(f"[{cls}] oneDNN runs {results['isa']['isa']}, precision {results['isa']['precision']}")
    if "throughput" in rows:
        log(f"[{cls}] throughput: strong net, plain model.fit float32 vs the project's trainer")
        steps = 80 if smoke else 200  # at least two calls of 20 steps at batch 128
        results["throughput"] = {}
        for batch in (64, 128):
            pairs = {"plain": [], "project": []}
            for _ in range(1 if smoke else min(3, most or 3)):
                for mode in pairs:  # interleaved, so drift in machine load hits both alike
                    figures = in_fresh_process(env, throughput, mode, steps * 64 // batch, batch)
                    pairs[mode].append(figures["images_per_second"])
            results["throughput"][str(batch)] = pairs
        at_once = [members_at_once(env, 2, steps, 128) for _ in range(1 if smoke else min(3, most or 3))]
        precision = in_fresh_process(env, isa_in_use)["precision"]
        results["throughput"]["rates"] = {
            "flops_per_image": in_fresh_process(env, training_flops),
            "two_at_once": at_once,
            "matmul_float32": in_fresh_process(env, matmul_rate, "float32", 1024 if smoke else 4096),
            "matmul_trainer": in_fresh_process(env, matmul_rate, "bfloat16" if "bfloat16" in precision else "float32",
                                               1024 if smoke else 4096),
            "trainer_precision": "bfloat16" if "bfloat16" in precision else "float32",
        }
        log(f"[{cls}] two members at once: {', '.join(f'{v:,.0f}' for v in at_once)} img/s")
    if "peer" in rows:
        log(f"[{cls}] peer: the Kaggle tutorial recipe in plain Keras")
        epochs, steps = (1, 5) if smoke else (30, 640)
        runs = []
        for _ in range(1 if smoke else min(2, most or 2)):
            started = time.perf_counter()
            csv = bench_dir / f"peer-{cls}.csv"
            in_fresh_process(env, peer_recipe, str(official.data_dir), epochs, steps, str(csv))
            runs.append({"seconds": time.perf_counter() - started, "accuracy": _accuracy(csv, official)})
        results["peer"] = runs
    for row, target in TARGETS.items():
        if row not in rows or cls not in target.get("classes", (cls,)):
            continue
        repeats = 1 if smoke else min(target["repeats"], most or target["repeats"])
        log(f"[{cls}] {row}: {repeats} run(s)")
        extra = SMOKE_SET if smoke else []
        if row == "demo":
            results[row] = [time_demo(bench_dir, env, smoke) for _ in range(repeats)]
        elif row == "fast-onecycle":
            results[row] = [time_train("fast", official, env, [*extra, "--set", "schedule=onecycle"])]
        else:
            results[row] = [time_train(row, official, env, extra) for _ in range(repeats)]
    if "inference" in rows and "quick" in results:
        run_dir = official.models_dir / results["quick"][-1]["run"]
        results["inference"] = in_fresh_process(env, inference, str(run_dir), 1000 if smoke else 28_000)
    for recipe in (r for r in RECIPES if r in rows):
        log(f"[{cls}] {recipe}")
        results[recipe] = time_recipe(recipe, official, env, smoke)
    if "curve" in rows:
        kaggle = prepare_data(bench_dir, "kaggle", smoke, REPORT_SEED)
        results["curve"] = []
        for budget in (SMOKE_BUDGET,) if smoke else budgets or CURVE_BUDGETS + LONG_BUDGETS.get(cls, ()):
            log(f"[{cls}] curve: quick in a {budget} budget (Kaggle layout, report split seed {REPORT_SEED})")
            point = {"budget": budget, "split_seed": REPORT_SEED,
                     **time_train("quick", kaggle, env, ["--budget", budget])}
            # what the point stands for on a slow laptop needs the strong net's speed, which a short plan skips
            point["strong_images_per_second"] = in_fresh_process(env, strong_speed, str(kaggle.data_dir))
            results["curve"].append(point)
    if "parallel" in rows:
        log(f"[{cls}] members at once: one member on every core against one single-thread member per core")
        nets = ("lenet",) if smoke else tuple(accuracy_table.POINTS)  # every net the planner chooses from
        results["parallel"] = accuracy_table.parallel_speedup(env, nets)
    if "table" in rows and cls == next(iter(cpu_classes())):  # accuracy does not depend on the CPU: one class
        log(f"[{cls}] the planner's accuracy table: nets x epochs, two members each (Kaggle layout)")
        results["table"] = accuracy_table.measure(prepare_data(bench_dir, "kaggle", smoke),
                                                  lambda paths, arch, epochs: table_point(paths, arch, epochs, env),
                                                  smoke, log, points)
    if "ablation" in rows:
        log(f"[{cls}] ablation: one strong member, then augmentation, ReduceLROnPlateau, test-time augmentation, "
            "members")
        results["ablation"] = ablation(official, env, smoke, log)
    return results


def strong_speed(data_dir: str) -> float:
    """Training img/s of the strong net as the planner times it (one member on every core), on `data_dir`."""
    from digits import budget, data
    from digits.config import TrainConfig

    paths = Paths(data_dir=Path(data_dir))
    pixels, labels, _, _ = data.read_inputs(paths.data_dir, paths.cache_dir)
    return budget.measure(TrainConfig(), pixels, labels, "strong")["train_images_per_second"]


def table_point(paths: Paths, arch: str, passes: int, env: dict) -> Path:
    """Two members of `arch` for `passes` passes over the train rows, trained at once, with the epochs, patience
    and warm-up a budget would plan for that many passes (budget.as_planned)."""
    from digits import budget
    from digits.config import load_config

    cfg = load_config("quick")
    with open(paths.data_dir / "train.csv", "rb") as f:
        count = sum(1 for _ in f) - 1
    planned = budget.as_planned(cfg, passes, count - math.ceil(count * cfg.holdout_fraction))
    sets = [x for key, value in planned.items() for x in ("--set", f"{key}={value}")]
    out = _digits("train", "--config", "quick", "--force", *_path_args(paths), "--jobs", "2", "--set", "budget=",
                  "--set", f"architectures={arch}", "--set", "members=2", *sets, env=env)
    return paths.models_dir / Path(out.stdout.strip().splitlines()[-1]).stem


def write_plan_table(stored: dict):
    """src/digits/plan_table.py from the stored table and each class's members-at-once speedup."""
    table = next((data["table"] for data in stored.values() if "table" in data), None)
    if table is None:
        return
    precision = {"bf16": "mixed_bfloat16", "avx2": "float32", "avx2-native": "float32"}  # native after the stand-in:
    speedups = {precision[cls]: stored[cls]["parallel"]["figures"] for cls in CLASS_TITLES  # a real AVX2 CPU's wins
                if "parallel" in stored.get(cls, {})}
    accuracy_table.write_module(table["figures"], speedups, table["date"])


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    return out.stdout.strip() or "unknown"


def save(cls: str, results: dict, host: dict, command: str, results_dir: Path) -> dict:
    """Merge `results` into docs/bench/<class>.json (stored_class), stamping each row with date, commit, command and
    machine; returns that class's stored rows."""
    path = results_dir / f"{stored_class(cls, host['cpu_flags'])}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stamp = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "command": command,
             "machine": f"{host['cpu']}, {host['cores']} cores"}
    for row, figures in results.items():
        if row == "curve":  # each point keeps its own stamp; one re-measured replaces only its budget's
            figures = [{**p, **stamp} for p in figures]
            new = {q["budget"] for q in figures}
            kept = [p for p in stored[row]["figures"] if p["budget"] not in new] if row in stored else []
            figures = sorted(kept + figures, key=lambda p: budget_seconds(p["budget"]))
        if row == "table" and row in stored:  # and only the point of its net and epochs
            new = {(p["architecture"], p["epochs"]) for p in figures["points"]}
            kept = [p for p in stored[row]["figures"]["points"] if (p["architecture"], p["epochs"]) not in new]
            figures = {**figures, "points": accuracy_table.in_table_order(kept + figures["points"])}
        stored[row] = {"figures": figures, **stamp}
    stored["host"] = host
    atomic.write_text(path, json.dumps(stored, indent=1))
    return stored


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmark runs")
    parser.add_argument("--only", help=f"comma-separated rows or groups ({', '.join(GROUPS)}); default all: "
                                       f"{','.join(ALL_ROWS)}")
    parser.add_argument("--cpu", default="all", help="bf16, avx2 or all (the classes this machine can stand in for)")
    parser.add_argument("--out", help="report path (default docs/BENCHMARKS.md; results beside it in bench/)")
    parser.add_argument("--repeats", type=int, default=0, help="at most this many runs of a row (default: its own)")
    parser.add_argument("--budgets", help=f"the curve's budgets (default {','.join(CURVE_BUDGETS)}, "
                        f"and on bf16 {','.join(LONG_BUDGETS['bf16'])})")
    every_point = ",".join(f"{net}:{e}" for net, epochs in accuracy_table.POINTS.items() for e in epochs)
    parser.add_argument("--points", help=f"the table's points to measure, as net:epochs,... (default {every_point})")
    parser.add_argument("--render", action="store_true", help="only rewrite the report from the stored results")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else REPORT
    results_dir = out.parent / "bench"
    rows = [row for name in args.only.split(",") for row in GROUPS.get(name, [name])] if args.only else ALL_ROWS
    unknown = set(rows) - set(ALL_ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)} (known: {', '.join(ALL_ROWS)})")
    try:
        points = accuracy_table.parse_points(args.points) if args.points else None
    except ValueError as error:
        parser.error(str(error))
    classes = cpu_classes()
    chosen = classes if args.cpu == "all" else {args.cpu: classes[args.cpu]} if args.cpu in classes else None
    if not chosen:
        parser.error(f"--cpu {args.cpu}: this machine can measure {', '.join(classes)}")
    command = " ".join(["make bench", " SMOKE=1" * args.smoke, f"ONLY={args.only}" * bool(args.only),
                        f"CPU={args.cpu}" * (args.cpu != "all"), f"REPEATS={args.repeats}" * bool(args.repeats),
                        f"ARGS='--budgets {args.budgets}'" * bool(args.budgets),
                        f"ARGS='--points {args.points}'" * bool(args.points)])
    command = " ".join(command.split())
    stored = {}
    for cls, env in ({} if args.render else chosen).items():
        results = measure(cls, env, rows, args.smoke, args.repeats, budgets=args.budgets.split(",") if args.budgets
                          else (), points=points)
        host = in_fresh_process(env, machine)
        stored[stored_class(cls, host["cpu_flags"])] = save(cls, results, host, command, results_dir)
    for cls in CLASS_TITLES:
        if cls not in stored and (results_dir / f"{cls}.json").is_file():
            stored[cls] = json.loads((results_dir / f"{cls}.json").read_text())
    if {"table", "parallel"} & set(rows) and not args.smoke and out == REPORT:
        write_plan_table(stored)
    text, blocks = render(stored)
    atomic.write_text(out, text)
    plot_curve(stored, out.parent / "images" / "budget_curve.png")
    if out == REPORT:
        write_readme_blocks(blocks)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
