"""`make bench`: accuracy and speed of the configs against the tutorial recipe, side by side, into BENCHMARKS.md."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import atomic
from .config import PROJECT_ROOT, Paths

REPORT = PROJECT_ROOT / "docs" / "BENCHMARKS.md"
# config -> (accuracy target on MNIST's official test, wall-time target in seconds, repeats)
TARGETS = {"fast": (0.9940, 85, 3), "quick": (0.9955, 600, 1), "strong": (0.9970, 3600, 1)}
SMOKE_SET = ["--set", "epochs=1", "--set", "members=1", "--set", "architectures=lenet"]


def prepare_data(bench_dir: Path, smoke: bool) -> Paths:
    """Official-layout MNIST CSVs (60,000 / 10,000; tiny in smoke mode) with answers, built offline."""
    from . import mnist

    paths = Paths(data_dir=bench_dir / "data", models_dir=bench_dir / "models",
                  submissions_dir=bench_dir / "submissions")
    idx = mnist.fetch_idx(PROJECT_ROOT / "data" / "mnist")
    rows = (3000, 1000) if smoke else (0, 0)
    mnist.write_competition_csvs(idx, paths.data_dir, "official", train_rows=rows[0], test_rows=rows[1])
    return paths


def time_config(config: str, paths: Paths, smoke: bool) -> dict:
    """Wall time of `digits train` from reading the CSVs to the validated submission, and its test accuracy."""
    from .submission import accuracy

    args = [sys.executable, "-m", "digits", "train", "--config", config, "--force",
            "--data-dir", str(paths.data_dir), "--models-dir", str(paths.models_dir),
            "--submissions-dir", str(paths.submissions_dir), *(SMOKE_SET if smoke else [])]
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, cwd=PROJECT_ROOT)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"digits train --config {config} failed:\n{out.stderr[-4000:]}")
    submission = out.stdout.strip().splitlines()[-1]
    metrics = json.loads((paths.models_dir / Path(submission).stem / "metrics.json").read_text())
    return {"seconds": seconds, "accuracy": accuracy(submission, paths.answers_csv), "run": Path(submission).stem,
            "holdout": metrics["ensemble"]["holdout_accuracy"],
            "train_images_per_second": statistics.median(m["train_images_per_second"] for m in metrics["members"])}


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


def throughput(mode: str, steps: int = 200, batch_size: int = 64, config: str = "quick") -> dict:
    """Training images/s of the strong net: `plain` model.fit float32, or `project` (the config's trainer)."""
    import dataclasses

    import keras

    from . import mnist
    from .config import load_config
    from .data import to_images
    from .member import build_model, make_augmenter, make_dataset, setup_tensorflow

    cfg = dataclasses.replace(load_config(config), batch_size=batch_size, mixed_precision=mode == "project")
    setup_tensorflow(cfg, seed=1)
    x_train, y_train, _, _ = mnist.load_all(mnist.fetch_idx(PROJECT_ROOT / "data" / "mnist"))
    count = steps * batch_size
    images, labels = to_images(x_train[:count]), y_train[:count].astype(np.int32)
    if mode == "plain":
        model = plain_strong_net()
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        fit = dict(x=images, y=labels, batch_size=batch_size)
        model.fit(x=images[: 10 * batch_size], y=labels[: 10 * batch_size], batch_size=batch_size, verbose=0)
    else:
        model = build_model(cfg, "strong", steps)
        fit = dict(x=make_dataset(images, labels, batch_size, 1, make_augmenter(cfg, 1)))
        model.fit(fit["x"].take(2 * cfg.steps_per_execution), shuffle=False, verbose=0)
    started = time.perf_counter()
    model.fit(**fit, epochs=1, verbose=0, shuffle=mode == "plain")
    return {"images_per_second": count / (time.perf_counter() - started)}


def inference(run_dir: str, rows: int = 28_000) -> dict:
    """Images/s of the whole ensemble of `run_dir` predicting `rows` test images."""
    from . import mnist
    from .data import to_images
    from .member import predict_probs
    from .models import load_model

    _, _, x_test, _ = mnist.load_all(mnist.fetch_idx(PROJECT_ROOT / "data" / "mnist"))
    images = to_images(np.resize(x_test, (rows, 784)))
    models = [load_model(p) for p in sorted(Path(run_dir).glob("members/*/model.keras"))]
    for model in models:
        predict_probs(model, images[:1024])
    started = time.perf_counter()
    for model in models:
        predict_probs(model, images)
    seconds = time.perf_counter() - started
    return {"members": len(models), "rows": rows, "images_per_second": rows / seconds, "seconds": seconds}


def ensemble_size_curve(run_dir: Path, paths: Paths, png: Path) -> dict:
    """Test and holdout accuracy of the first k members averaged, k = 1..K; plotted to `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .ensemble import average, finished_members, load_member
    from .submission import read

    truth = read(paths.answers_csv)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tests = [load_member(run_dir, i)[2] for i in finished_members(run_dir)]
    test_curve = [float(np.mean(average(tests[: k + 1]).argmax(1) == truth)) for k in range(len(tests))]
    holdout_curve = metrics["ensemble"]["accuracy_by_size"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = range(1, len(tests) + 1)
    ax.plot(sizes, [100 * a for a in test_curve], "o-", label="MNIST test (scored only)")
    ax.plot(sizes, [100 * a for a in holdout_curve], "s--", label="holdout (used for selection)")
    ax.set(xlabel="members averaged (in training order)", ylabel="accuracy (%)",
           title=f"Ensemble size vs accuracy: {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return {"test": test_curve, "holdout": holdout_curve, "png": png.name}


def _median_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} (range {min(values):.1f}-{max(values):.1f}, n={len(values)})"


def _in_fresh_process(call: str, timeout=7200) -> dict:
    """Run `bench.<call>` in a fresh interpreter (clean TensorFlow state) and return its JSON result."""
    code = f"import json; from digits import bench; print(json.dumps(bench.{call}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         cwd=PROJECT_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    """The CPU, cores and library versions the figures were measured with."""
    return _in_fresh_process("_machine()")


def _machine() -> dict:
    from . import manifest

    return {**manifest.host_info(), **manifest.versions()}


def main(smoke: bool = False, out: Path | None = None, paths: Paths | None = None, only: str | None = None,
         log=print) -> Path:
    """Run every benchmark row side by side and rewrite docs/BENCHMARKS.md (or `out`)."""
    out = out or REPORT
    rows = only.split(",") if only else ["peer", "throughput", *TARGETS, "inference"]
    bench_dir = PROJECT_ROOT / "build" / ("bench-smoke" if smoke else "bench")
    data_paths = prepare_data(bench_dir, smoke)
    results, started = {}, time.time()
    if "peer" in rows:
        log("peer: the Kaggle tutorial recipe in plain Keras")
        epochs, steps = (1, 5) if smoke else (30, 640)
        runs = []
        for _ in range(1 if smoke else 2):
            t0 = time.perf_counter()
            csv = bench_dir / "peer.csv"
            _in_fresh_process(f"peer_recipe({str(data_paths.data_dir)!r}, {epochs}, {steps}, {str(csv)!r})")
            runs.append({"seconds": time.perf_counter() - t0, "accuracy": _accuracy(csv, data_paths)})
        results["peer"] = runs
    if "throughput" in rows:
        log("throughput: strong net, plain model.fit float32 vs the project's trainer")
        steps = 10 if smoke else 200
        results["throughput"] = {}
        for batch in (64, 128):
            pairs = {"plain": [], "project": []}
            for _ in range(1 if smoke else 3):
                for mode in pairs:  # interleaved, so drift in machine load hits both alike
                    call = f"throughput({mode!r}, {steps * 64 // batch}, {batch})"
                    pairs[mode].append(_in_fresh_process(call)["images_per_second"])
            results["throughput"][batch] = pairs
    for config in TARGETS:
        if config not in rows:
            continue
        repeats = 1 if smoke else TARGETS[config][2]
        log(f"{config}: {repeats} run(s) of digits train --config {config}")
        results[config] = [time_config(config, data_paths, smoke) for _ in range(repeats)]
    if "inference" in rows and "quick" in results:
        run_dir = data_paths.models_dir / results["quick"][-1]["run"]
        results["inference"] = _in_fresh_process(f"inference({str(run_dir)!r}, {1000 if smoke else 28_000})")
    if "strong" in results:
        run_dir = data_paths.models_dir / results["strong"][-1]["run"]
        results["ensemble_size"] = ensemble_size_curve(run_dir, data_paths, out.parent / "images" / "ensemble_size.png")
    text = render(results, machine(), smoke, time.time() - started)
    atomic.write_text(out, text)
    log(f"wrote {out}")
    return out


def _accuracy(csv: Path, paths: Paths) -> float:
    from .submission import accuracy

    return accuracy(csv, paths.answers_csv)


def render(results: dict, host: dict, smoke: bool, seconds: float) -> str:
    """BENCHMARKS.md: machine, versions, command, and each row's figure, target and pass/fail."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`" + (" SMOKE=1 (tiny sizes: figures are meaningless)" if smoke else "")
        + f" on {time.strftime('%Y-%m-%d')}, in {seconds / 60:.0f} min. Data: MNIST's official split "
        "(train.csv = 60,000 rows, test.csv = 10,000), built offline by `digits download --source mnist "
        "--layout official`; accuracy is against the held-back test labels, which training never reads. "
        "Wall time runs from starting `digits train` (reading the CSVs) to the validated submission.",
        "",
        f"- Machine: {host['cpu']}, {host['cores']} cores, flags {', '.join(host['cpu_flags']) or 'none'}, "
        f"GPUs: {', '.join(host['gpus']) or 'none'}",
        f"- Python {host['python']}, TensorFlow {host['tensorflow']}, Keras {host['keras']}, "
        f"NumPy {host['numpy']}",
        "- Command: `make bench" + (" SMOKE=1" if smoke else "") + "`",
        "",
        "| row | accuracy (test) | wall time (s) | target | pass |",
        "|---|---|---|---|---|",
    ]
    if "peer" in results:
        runs = results["peer"]
        lines.append(f"| peer: Kaggle tutorial recipe, plain Keras | "
                     f"{_pct([r['accuracy'] for r in runs])} | {_median_spread([r['seconds'] for r in runs])} "
                     "| (reference) | |")
    for config, (target_acc, target_s, _) in TARGETS.items():
        if config not in results:
            continue
        runs = results[config]
        acc, secs = statistics.median(r["accuracy"] for r in runs), statistics.median(r["seconds"] for r in runs)
        ok = acc >= target_acc and secs <= target_s
        lines.append(f"| `{config}` | {_pct([r['accuracy'] for r in runs])} | "
                     f"{_median_spread([r['seconds'] for r in runs])} | >= {target_acc:.2%}, <= {target_s} s | "
                     f"{'PASS' if ok else 'FAIL'} |")
    if "throughput" in results:
        lines += ["", "| training throughput, strong net | plain Keras `model.fit`, float32 (images/s) | "
                  "project trainer: fused BN, bf16 where native, tf.data augmentation (images/s) | ratio | "
                  "target | pass |", "|---|---|---|---|---|---|"]
        for batch, pair in results["throughput"].items():
            ratio = statistics.median(pair["project"]) / statistics.median(pair["plain"])
            lines.append(f"| batch {batch} | {_median_spread(pair['plain'])} | {_median_spread(pair['project'])} | "
                         f"{ratio:.2f}x | >= 2.0x | {'PASS' if ratio >= 2 else 'FAIL'} |")
    if "inference" in results:
        inf = results["inference"]
        lines += ["", f"Inference: the `quick` ensemble ({inf['members']} members) predicts {inf['rows']:,} images at "
                  f"{inf['images_per_second']:,.0f} images/s ({inf['seconds']:.1f} s, all members)."]
    if "ensemble_size" in results:
        curve = results["ensemble_size"]
        lines += ["", "Ensemble size versus accuracy (the `strong` run; members averaged in training order):", "",
                  "| members | " + " | ".join(str(k + 1) for k in range(len(curve["test"]))) + " |",
                  "|---|" + "---|" * len(curve["test"]),
                  "| test | " + " | ".join(f"{a:.2%}" for a in curve["test"]) + " |",
                  "| holdout | " + " | ".join(f"{a:.2%}" for a in curve["holdout"]) + " |",
                  "", f"![ensemble size versus accuracy](images/{curve['png']})"]
    lines.append("")
    return "\n".join(lines)


def _pct(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.median(values):.2%} (range {min(values):.2%}-{max(values):.2%})"
