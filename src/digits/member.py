"""Train one ensemble member: seeded, augmented, resumable to the exact bytes after each epoch, last epoch kept."""

import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np

from . import atomic, progress, runs
from .augment import augment, augments
from .config import TrainConfig, epoch_steps
from .data import to_images
from .gpus import describe_gpu
from .models import OneCycle, load_model, make_model, make_optimizer
from .quiet import import_tensorflow
from .replan import replan

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, quietly imported)

log = logging.getLogger(__name__)


def member_seed(cfg: TrainConfig, index: int) -> int:
    return cfg.seed * 1000 + index


def setup_tensorflow(cfg: TrainConfig, seed: int, threads: int = 0):
    """Seed everything, make ops deterministic, and pick the compute precision for this machine.

    Ops run one at a time (one inter-op thread; each op still uses `threads`, or every core): as fast on these nets,
    and no op's work depends on what else happens to run beside it.
    """
    try:
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process; keep its settings
    keras.utils.set_random_seed(seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(compute_policy(cfg.mixed_precision))


def compute_policy(mixed_precision: bool, environ=None) -> str:
    """bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), float16 on GPUs, else float32.

    `ONEDNN_MAX_CPU_ISA` capped below AVX512-BF16 (e.g. AVX2, used to stand in for an AVX2 laptop) means float32.
    """
    import os

    environ = os.environ if environ is None else environ
    if not mixed_precision:
        return "float32"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    isa = environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and "BF16" not in isa and "AMX" not in isa:
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def make_dataset(images, labels, cfg: TrainConfig, seed: int, first_epoch: int, epochs: int):
    """Batches for epochs [first_epoch, epochs): each epoch's order and warps depend only on (seed, epoch, step).

    So a member resumed after epoch k sees exactly the batches an uninterrupted one would. The rows are dealt
    out as one permutation per pass after another, and epoch k takes the k-th stretch of that stream.
    """
    images, labels = tf.constant(images), tf.constant(labels)
    count, batch_size, steps = len(labels), cfg.batch_size, epoch_steps(cfg, len(labels))
    seed = tf.constant(seed, tf.int64)
    start, end = first_epoch * steps * batch_size, epochs * steps * batch_size
    passes = tf.data.Dataset.range(start // count, (end - 1) // count + 1)
    stream = passes.flat_map(lambda one_pass: tf.data.Dataset.from_tensor_slices(
        tf.argsort(tf.random.stateless_uniform([count], seed=tf.stack([seed, -1 - one_pass])))))
    batches = stream.skip(start % count).batch(batch_size, drop_remainder=True).enumerate()

    def gather(number, index):
        epoch, step = first_epoch + number // steps, number % steps
        batch = tf.gather(images, index)
        if augments(cfg):
            batch = augment(batch, tf.stack([seed, epoch * 1_000_000 + step]), cfg)
        return batch, tf.gather(labels, index)

    # No autotuning model: deleting its iterator, at the end of fit, waits out the model thread's current sleep,
    # which grows towards a minute (10-40 s measured on 2 cores); AUTOTUNE then means one call per core.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def predict_probs(model, images: np.ndarray, batch_size: int = 1024, tta: bool = False) -> np.ndarray:
    """Softmax probabilities (float32); with `tta`, averaged over the image and 1-pixel shifts."""
    probs = model.predict(images, batch_size=batch_size, verbose=0).astype(np.float32)
    if not tta:
        return probs
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        shifted = np.roll(images, (dy, dx), axis=(1, 2))
        probs += model.predict(shifted, batch_size=batch_size, verbose=0).astype(np.float32)
    return probs / np.float32(5.0)


def build_model(cfg: TrainConfig, architecture: str, steps_per_epoch: int, seed: int | None = None) -> keras.Model:
    """The member's network (initial weights from `seed`), compiled with the config's optimizer and schedule."""
    model = make_model(architecture, l2=cfg.l2, dropout=cfg.dropout, seed=seed)
    total_steps = cfg.epochs * steps_per_epoch
    rate = OneCycle(cfg.learning_rate, total_steps) if cfg.schedule == "onecycle" else cfg.learning_rate
    model.compile(
        optimizer=make_optimizer(cfg, rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=cfg.jit_compile,
        steps_per_execution=cfg.steps_per_execution,
    )
    return model


def schedule_callbacks(cfg: TrainConfig, steps: int) -> list:
    """The rate schedule as callbacks: a linear warm-up, then ReduceLROnPlateau (one-cycle is in the optimizer)."""
    if cfg.schedule != "plateau":
        return []
    warm_up = [WarmUp(cfg.learning_rate, cfg.warmup_epochs * steps)] if cfg.warmup_epochs else []
    return warm_up + [keras.callbacks.ReduceLROnPlateau(
        monitor=cfg.plateau_monitor, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
        min_delta=cfg.plateau_min_delta, cooldown=cfg.plateau_cooldown, min_lr=cfg.min_learning_rate)]


def train_member(cfg: TrainConfig, index: int, pixels, labels, holdout_pixels, holdout_labels, test_pixels,
                 member_dir, threads: int = 0, images_after: int = 0, deadline: float | None = None,
                 gpu: dict | None = None, ends_by: float | None = None) -> dict:
    """Train member `index` into `member_dir`, continuing from its last finished epoch if any.

    `images_after` (images the members after this one will train on) feeds the run's ETA; past `deadline`
    (a time.time(): its share of the budget) no further epoch starts, and the last finished epoch is kept; `ends_by`
    (the run's deadline) bounds the ETA. `gpu` (gpus.visible_gpus's entry this process was given) is recorded in
    done.json, or null if TensorFlow sees no GPU.
    """
    member_dir = Path(member_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    seed = member_seed(cfg, index)
    setup_tensorflow(cfg, seed, threads)
    if gpu and not tf.config.list_physical_devices("GPU"):
        log.warning(f"warning: member {index + 1}: TensorFlow sees no GPU (given {gpu['name']}); training on the CPU")
        gpu = None
    architecture = cfg.architectures[index % len(cfg.architectures)]
    images, holdout_images = to_images(pixels), to_images(holdout_pixels)
    labels, holdout_labels = np.asarray(labels, np.int32), np.asarray(holdout_labels, np.int32)
    steps = epoch_steps(cfg, len(images))
    model = build_model(cfg, architecture, steps, seed)
    name = f"member {index + 1}/{cfg.members}"
    checkpoint = EpochCheckpoint(member_dir, seed)
    if checkpoint.state["epochs_done"]:
        checkpoint.restore(model)
        log.info(f"{name}: resuming after epoch {checkpoint.state['epochs_done']}")
    first_epoch = checkpoint.state["epochs_done"]
    schedule = schedule_callbacks(cfg, steps)
    checkpoint.schedule_callbacks = schedule
    callbacks = list(schedule)  # those that change the rate or stop training act before the checkpoint records it
    if cfg.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.early_stopping_patience))
    if deadline is not None:
        callbacks.append(Deadline(deadline, name, schedule, cfg.learning_rate, checkpoint.state))
    callbacks.append(checkpoint)
    if cfg.tensorboard and importlib.util.find_spec("tensorboard"):  # Keras's callback needs the package
        callbacks.append(keras.callbacks.TensorBoard(str(member_dir / runs.TENSORBOARD_DIR), write_graph=False))
    callbacks.append(progress.Progress(name, steps * cfg.batch_size, cfg.batch_size, cfg.epochs, images_after,
                                       ends_by=ends_by))
    if first_epoch < cfg.epochs and not checkpoint.state.get("stopped"):
        model.fit(
            make_dataset(images, labels, cfg, seed, first_epoch, cfg.epochs),
            epochs=cfg.epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=steps,
            validation_data=(holdout_images, holdout_labels),
            validation_batch_size=cfg.predict_batch_size,
            callbacks=callbacks,
            shuffle=False,  # the dataset orders itself, from (seed, epoch)
            verbose=0,
        )
    state = checkpoint.state
    # the last epoch, not the best holdout one: on 3,360 holdout images a lucky epoch at the starting rate often
    # scored best and was kept, 0.15 points below the last epoch on the test (docs/PERFORMANCE.md, 2026-12-04)
    with atomic.atomic_path(member_dir / runs.MODEL_FILE) as tmp:
        model.save(tmp)
    kept = load_model(member_dir / runs.MODEL_FILE)
    started = time.time()
    holdout_probs = predict_probs(kept, holdout_images, cfg.predict_batch_size, cfg.tta)
    test_probs = predict_probs(kept, to_images(test_pixels), cfg.predict_batch_size, cfg.tta)
    predict_seconds = time.time() - started
    atomic.save_npy(member_dir / runs.HOLDOUT_PROBS_FILE, holdout_probs)
    atomic.save_npy(member_dir / runs.TEST_PROBS_FILE, test_probs)
    result = {
        "index": index,
        "architecture": architecture,
        "seed": seed,
        "epochs_run": len(state["history"]),
        "holdout_accuracy": float(np.mean(holdout_probs.argmax(1) == holdout_labels)),
        "train_seconds": round(state["train_seconds"], 2),
        "predict_seconds": round(predict_seconds, 2),
        "train_images_per_second": round(steps * cfg.batch_size * len(state["history"])
                                         / max(state["train_seconds"], 1e-9), 1),
        "gpu": gpu,
        **({"replan": state["replan"]} if "replan" in state else {}),  # budgeted members: what really fit
    }
    checkpoint.remove_backups()
    atomic.write_text(member_dir / runs.DONE_FILE, json.dumps(result, indent=2))
    where = f", on {describe_gpu(gpu)}" if gpu else ""
    log.info(f"{name}: holdout accuracy {result['holdout_accuracy']:.4f} after {result['epochs_run']} epochs{where}")
    return result


class WarmUp(keras.callbacks.Callback):
    """Raise the rate linearly from near zero to `rate` over the first `steps` steps, then leave it alone."""

    def __init__(self, rate: float, steps: int):
        super().__init__()
        self.rate, self.steps = rate, max(1, steps)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step < self.steps:  # called once per `steps_per_execution` steps; the last call reaches `rate`
            self.model.optimizer.learning_rate.assign(self.rate * min(1.0, (step + self.calls) / self.steps))

    def on_train_begin(self, logs=None):
        self.calls = self.model.steps_per_execution


class Deadline(keras.callbacks.Callback):
    """Stop training when another epoch as long as the last would end past a wall-clock deadline (the member's share
    of the budget); and re-plan: shorten the plateau's patience to the epochs that really fit, so the rate drops.

    After each epoch from a fit's second, the mean seconds of its epochs but the first (which traces the model) give
    the epochs that fit (replan.replan), and `schedule`'s ReduceLROnPlateau the patience for them. Each change is
    logged and kept in the checkpoint's `state` (saved with the epoch), whence a resumed member takes it back.
    """

    def __init__(self, deadline: float, name: str = "", schedule=(), rate: float = 0.0, state: dict | None = None):
        super().__init__()
        self.deadline, self.name, self.rate = deadline, name, rate
        self.plateau = next((c for c in schedule if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
        self.state = {} if state is None else state

    def on_train_begin(self, logs=None):
        self.seconds = []  # of this fit's epochs
        if self.plateau is not None and self.state.get("replan"):
            self.plateau.patience = self.state["replan"][-1]["patience"]

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.seconds.append(now - self.began)
        if 2 * now - self.began > self.deadline:
            self.model.stop_training = True
        elif self.plateau is not None and len(self.seconds) > 1:
            self._replan(epoch + 1, float(np.mean(self.seconds[1:])), self.deadline - now)

    def _replan(self, done: int, seconds: float, left: float):
        """Set the patience for the epochs that fit; log and record the first re-plan and every change after it."""
        before, most = self.plateau.patience, self.params["epochs"]
        at_start_rate = float(np.asarray(self.model.optimizer.learning_rate)) >= self.rate * (1 - 1e-6)
        epochs, patience = replan(seconds, left, done, most, before, at_start_rate)
        events = self.state.setdefault("replan", [])
        if events and patience == before:
            return
        fit = f"all {most} epochs fit by its deadline" if epochs == most else \
            f"{epochs} epochs fit by its deadline, of {most} at most"
        change = f"{before} -> {patience}" if patience != before else f"stays {before}"
        log.info(f"{self.name}: {fit} ({seconds:.1f} s each; {epochs - done} to go after epoch {done}): "
                 f"plateau patience {change}")
        events.append({"after_epoch": done, "epoch_seconds": round(seconds, 2), "epochs_fit": epochs,
                       "at_start_rate": at_start_rate, "patience": patience})
        self.plateau.patience = patience


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: the weights with the optimizer, and the schedule's counters.

    Keras's BackupAndRestore restores weights, optimizer and epoch but writes them in place (a kill mid-write leaves
    a pair that disagrees) and not ReduceLROnPlateau's counters; here a state file is renamed into place last and
    names the backup it belongs to, so a kill at any moment resumes from one consistent epoch. Each epoch also
    re-seeds the dropout layers from (seed, epoch), which is what makes a resumed member byte-identical.
    """

    def __init__(self, member_dir: Path, seed: int):
        super().__init__()
        self.member_dir, self.seed = member_dir, seed
        self.schedule_callbacks = []
        self.state = self._read_state()

    def _read_state(self) -> dict:
        path = self.member_dir / runs.STATE_FILE
        if path.is_file():
            state = json.loads(path.read_text())
            if (self.member_dir / state.get("backup", "")).is_file():
                return state
        return {"epochs_done": 0, "history": [], "plateau": {}, "train_seconds": 0.0}

    def restore(self, model):
        """Weights and optimizer state (its step count and current learning rate) of the last finished epoch."""
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.member_dir / self.state["backup"])

    def on_train_begin(self, logs=None):
        self.started = time.time()
        for callback in self.schedule_callbacks:  # after their own on_train_begin reset them
            if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
                for key, value in self.state.get("plateau", {}).items():
                    setattr(callback, key, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        self.rate = float(np.asarray(self.model.optimizer.learning_rate))
        for number, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([self.seed * 1000 + number, epoch], generator.state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = self.rate
        logs["seconds"] = time.time() - self.started
        state["history"] = state["history"][:epoch] + [logs]
        previous = state.get("backup")
        state["backup"] = f"backup-e{epoch + 1:03d}.weights.h5"
        with atomic.atomic_path(self.member_dir / state["backup"]) as tmp:
            self.model.save_weights(tmp)
        state["epochs_done"] = epoch + 1
        state["train_seconds"] = state.get("train_seconds", 0.0) + logs["seconds"]
        state["stopped"] = bool(self.model.stop_training)
        state["plateau"] = {
            key: float(getattr(callback, key))
            for callback in self.schedule_callbacks
            if isinstance(callback, keras.callbacks.ReduceLROnPlateau)
            for key in ("best", "wait", "cooldown_counter")
        }
        atomic.write_text(self.member_dir / runs.STATE_FILE, json.dumps(state, indent=1))
        if previous and previous != state["backup"]:
            (self.member_dir / previous).unlink(missing_ok=True)

    def remove_backups(self):
        for path in self.member_dir.glob("backup-e*.weights.h5"):
            path.unlink()
