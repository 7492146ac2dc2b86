"""Train one ensemble member: seeded, augmented, resumable after each epoch, best holdout epoch kept."""

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import atomic
from .config import TrainConfig
from .data import to_images
from .models import OneCycle, load_model, make_model

STATE_FILE = "state.json"
BACKUP_MODEL = "backup.keras"
BEST_MODEL = "model.keras"


def member_seed(cfg: TrainConfig, index: int) -> int:
    return cfg.seed * 1000 + index


def setup_tensorflow(cfg: TrainConfig, seed: int, threads: int = 0):
    """Seed everything, make ops deterministic, and pick the compute precision for this machine."""
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised in this process; keep its settings
    keras.utils.set_random_seed(seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(compute_policy(cfg.mixed_precision))


def compute_policy(mixed_precision: bool) -> str:
    """bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), float16 on GPUs, else float32."""
    if not mixed_precision:
        return "float32"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def make_augmenter(cfg: TrainConfig, seed: int):
    """Small rotations, zooms and shifts by Keras preprocessing layers; never flips."""
    from keras import layers

    steps = []
    if cfg.rotation_degrees:
        steps.append(layers.RandomRotation(cfg.rotation_degrees / 360.0, fill_mode="constant", seed=seed))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 1))
    if cfg.shift:
        steps.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed + 2))
    return keras.Sequential(steps, name="augment") if steps else None


def make_dataset(images, labels, batch_size: int, seed: int, augmenter=None):
    """Seeded reshuffle of row indices each epoch; batches gathered from in-memory tensors, then augmented."""
    images, labels = tf.constant(images), tf.constant(labels)
    dataset = tf.data.Dataset.range(len(labels)).shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        batch = tf.gather(images, index)
        return (augmenter(batch, training=True) if augmenter is not None else batch), tf.gather(labels, index)

    return dataset.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict_probs(model, images: np.ndarray, batch_size: int = 1024, tta: bool = False) -> np.ndarray:
    """Softmax probabilities (float32); with `tta`, averaged over the image and 1-pixel shifts."""
    probs = model.predict(images, batch_size=batch_size, verbose=0).astype(np.float32)
    if not tta:
        return probs
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        shifted = np.roll(images, (dy, dx), axis=(1, 2))
        probs += model.predict(shifted, batch_size=batch_size, verbose=0).astype(np.float32)
    return probs / np.float32(5.0)


def build_model(cfg: TrainConfig, architecture: str, steps_per_epoch: int) -> keras.Model:
    """The member's network, compiled with the config's optimizer, schedule and speed settings."""
    model = make_model(architecture)
    total_steps = cfg.epochs * steps_per_epoch
    rate = OneCycle(cfg.learning_rate, total_steps) if cfg.schedule == "onecycle" else cfg.learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=cfg.jit_compile,
        steps_per_execution=cfg.steps_per_execution,
    )
    return model


def train_member(cfg: TrainConfig, index: int, pixels, labels, holdout_pixels, holdout_labels, test_pixels,
                 member_dir, threads: int = 0, log=print) -> dict:
    """Train member `index` into `member_dir`, continuing from its last finished epoch if any."""
    member_dir = Path(member_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    seed = member_seed(cfg, index)
    setup_tensorflow(cfg, seed, threads)
    architecture = cfg.architectures[index % len(cfg.architectures)]
    images, holdout_images = to_images(pixels), to_images(holdout_pixels)
    labels, holdout_labels = np.asarray(labels, np.int32), np.asarray(holdout_labels, np.int32)
    state = _read_state(member_dir)
    if state["epochs_done"]:
        model = load_model(member_dir / BACKUP_MODEL, for_training=True)
        log(f"member {index}: resuming after epoch {state['epochs_done']}")
    else:
        model = build_model(cfg, architecture, math.ceil(len(images) / cfg.batch_size))
    callbacks = _schedule_callbacks(cfg, state)
    callbacks.append(EpochCheckpoint(member_dir, state, callbacks, log=lambda m: log(f"member {index}: {m}")))
    if cfg.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.early_stopping_patience))
    dataset = make_dataset(images, labels, cfg.batch_size, seed, make_augmenter(cfg, seed))
    started = time.time()
    if state["epochs_done"] < cfg.epochs:
        model.fit(
            dataset,
            epochs=cfg.epochs,
            initial_epoch=state["epochs_done"],
            validation_data=(holdout_images, holdout_labels),
            validation_batch_size=cfg.predict_batch_size,
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=0,
        )
    train_seconds = state["train_seconds"]
    best = load_model(member_dir / BEST_MODEL)
    started = time.time()
    holdout_probs = predict_probs(best, holdout_images, cfg.predict_batch_size, cfg.tta)
    test_probs = predict_probs(best, to_images(test_pixels), cfg.predict_batch_size, cfg.tta)
    predict_seconds = time.time() - started
    for name, array in (("holdout_probs.npy", holdout_probs), ("test_probs.npy", test_probs)):
        with atomic.atomic_path(member_dir / name) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    result = {
        "index": index,
        "architecture": architecture,
        "seed": seed,
        "epochs_run": len(state["history"]),
        "best_epoch": state["best_epoch"],
        "holdout_accuracy": float(np.mean(holdout_probs.argmax(1) == holdout_labels)),
        "train_seconds": round(train_seconds, 2),
        "predict_seconds": round(predict_seconds, 2),
        "train_images_per_second": round(len(images) * len(state["history"]) / max(train_seconds, 1e-9), 1),
    }
    (member_dir / BACKUP_MODEL).unlink(missing_ok=True)
    atomic.write_text(member_dir / "done.json", json.dumps(result, indent=2))
    log(f"member {index}: holdout accuracy {result['holdout_accuracy']:.4f} (best epoch {result['best_epoch']})")
    return result


def _read_state(member_dir: Path) -> dict:
    path = member_dir / STATE_FILE
    if path.is_file() and (member_dir / BACKUP_MODEL).is_file():
        return json.loads(path.read_text())
    return {"epochs_done": 0, "history": [], "best": -1.0, "best_epoch": 0, "plateau": {}, "train_seconds": 0.0}


def _schedule_callbacks(cfg: TrainConfig, state: dict) -> list:
    if cfg.schedule == "onecycle":
        return []  # the optimizer's OneCycle schedule sets the rate every step
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor=cfg.plateau_monitor,
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_learning_rate,
    )
    plateau.resume_state = state.get("plateau", {})
    return [plateau]


def _learning_rate(model) -> float:
    return float(np.asarray(model.optimizer.learning_rate))


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: keep the best holdout model, a full backup, and the history, all atomically."""

    def __init__(self, member_dir: Path, state: dict, schedule_callbacks: list, log=print):
        super().__init__()
        self.member_dir, self.state, self.schedule_callbacks, self.log = member_dir, state, schedule_callbacks, log

    def on_train_begin(self, logs=None):
        self.started = time.time()
        for callback in self.schedule_callbacks:
            for key, value in getattr(callback, "resume_state", {}).items():
                setattr(callback, key, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.rate = _learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = self.rate
        state["history"] = state["history"][:epoch] + [logs]
        if logs.get("val_accuracy", -1.0) >= state["best"]:  # on a tie the later epoch, at a lower rate, wins
            state["best"], state["best_epoch"] = logs["val_accuracy"], epoch + 1
            with atomic.atomic_path(self.member_dir / BEST_MODEL) as tmp:
                self.model.save(tmp)
        with atomic.atomic_path(self.member_dir / BACKUP_MODEL) as tmp:
            self.model.save(tmp)
        state["epochs_done"] = epoch + 1
        state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - self.started
        self.started = time.time()
        state["plateau"] = {
            key: float(getattr(callback, key))
            for callback in self.schedule_callbacks
            for key in ("best", "wait", "cooldown_counter")
            if hasattr(callback, "cooldown_counter")
        }
        atomic.write_text(self.member_dir / STATE_FILE, json.dumps(state, indent=1))
        self.log(
            f"epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
            f"holdout loss {logs.get('val_loss', 0):.4f} acc {logs.get('val_accuracy', 0):.4f} lr {self.rate:.2e}"
        )
