"""Live training progress: a tqdm bar per epoch on a terminal, one plain line per epoch elsewhere (CI, pipes)."""

import logging
import sys
import time

from .quiet import import_tensorflow

import_tensorflow()
import keras  # noqa: E402

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress(keras.callbacks.Callback):
    """Step, images/s, the member (k of N), and the whole run's estimated time left.

    The run's estimate assumes the rest trains at this member's speed: images left in this member plus
    `images_after` (the members still to come), divided by images/s so far; no later than `ends_by` (a
    time.time(): a budget's training deadline), if given.
    """

    def __init__(self, label: str, rows: int, batch_size: int, epochs: int, images_after: int, terminal=None,
                 ends_by: float | None = None):
        super().__init__()
        self.label, self.rows, self.batch_size, self.epochs = label, rows, batch_size, epochs
        self.images_after, self.ends_by = images_after, ends_by
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = None
        self.trained, self.seconds = 0, 0.0

    def _eta(self, seen_this_epoch: int, elapsed: float) -> float:
        speed = (self.trained + seen_this_epoch) / max(self.seconds + elapsed, 1e-9)
        left = (self.epochs - self.epoch) * self.rows - seen_this_epoch + self.images_after
        eta = left / max(speed, 1e-9)
        return eta if self.ends_by is None else min(eta, self.ends_by - time.time())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.time()
        if self.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.rows, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                            desc=f"{self.label} epoch {epoch + 1}/{self.epochs}", file=sys.stderr)

    def on_train_batch_end(self, batch, logs=None):
        self.rate = float(self.model.optimizer.learning_rate)  # the rate in use, before any end-of-epoch change
        done = min(self.rows, (batch + 1) * self.batch_size)
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"loss {float((logs or {}).get('loss', 0)):.4f}, "
                                 f"run ETA {clock(self._eta(done, time.time() - self.started))}", refresh=False)
        self.bar.update(done - self.bar.n)  # draws, postfix included, at most every tqdm's `mininterval`

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.time() - self.started
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        eta = self._eta(self.rows, elapsed)
        self.trained += self.rows
        self.seconds += elapsed
        logs = logs or {}
        log.info(f"{self.label} epoch {epoch + 1}/{self.epochs}: {elapsed:.1f} s, {self.rows / elapsed:,.0f} img/s, "
                 f"loss {logs.get('loss', 0):.4f}, holdout acc {logs.get('val_accuracy', 0):.4f}, "
                 f"lr {self.rate:.2e}, run ETA {clock(eta)}")

