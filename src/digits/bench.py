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


def _python(code: str, timeout=7200) -> dict:
    """Run `code` in a fresh interpreter (clean TF state); it prints one JSON line last."""
    env_cmd = [sys.executable, "-c", code]
    out = subprocess.run(env_cmd, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def throughput(mode: str, steps: int = 200, batch_size: int = 64) -> dict:
    """Training images/s of the strong net: `plain` model.fit float32, or `project` (the trainer's settings)."""
    import keras

    from . import mnist
    from .config import TrainConfig
    from .data import to_images
    from .member import make_augmenter, make_dataset, setup_tensorflow
    from .models import make_model

    cfg = TrainConfig(mixed_precision=mode == "project", batch_size=batch_size)
    setup_tensorflow(cfg, seed=1)
    x_train, y_train, _, _ = mnist.load_all(mnist.fetch_idx(PROJECT_ROOT / "data" / "mnist"))
    images, labels = to_images(x_train[: steps * batch_size]), y_train[: steps * batch_size].astype(np.int32)
    model = make_model("strong")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=cfg.jit_compile)
    if mode == "plain":
        data = dict(x=images, y=labels, batch_size=batch_size)
    else:
        data = dict(x=make_dataset(images, labels, batch_size, 1, make_augmenter(cfg, 1)))
    model.fit(**{**data, "x": data["x"]}, epochs=1, verbose=0, steps_per_epoch=10 if mode != "plain" else None)
    started = time.perf_counter()
    model.fit(**data, epochs=1, verbose=0)
    return {"images_per_second": len(images) / (time.perf_counter() - started)}


def inference(run_dir: str, rows: int = 28_000) -> dict:
    """Images/s of the whole ensemble of `run_dir` predicting `rows` test images."""
    import keras

    from . import mnist
    from .data import to_images
    from .member import predict_probs

    _, _, x_test, _ = mnist.load_all(mnist.fetch_idx(PROJECT_ROOT / "data" / "mnist"))
    images = to_images(np.resize(x_test, (rows, 784)))
    models = [keras.models.load_model(p) for p in sorted(Path(run_dir).glob("members/*/model.keras"))]
    for model in models:
        predict_probs(model, images[:1024])
    started = time.perf_counter()
    for model in models:
        predict_probs(model, images)
    seconds = time.perf_counter() - started
    return {"members": len(models), "images_per_second": rows / seconds, "seconds": seconds}
