"""The model factory: every network the configs can name, built as a Keras `Sequential`."""

import functools
import math
import os
from pathlib import Path

from .quiet import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, quietly imported)
from keras import layers  # noqa: E402


@functools.cache
def stats_by_matmul() -> bool:
    """Whether oneDNN trains batch norm with its AVX2 kernels (an x86 CPU without AVX-512, or one capped to AVX2),
    whose forward pass is 2x slower than two matrix-vector products and a multiply-add (PERFORMANCE.md, issue 39)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" or tf.config.list_physical_devices("GPU"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa.startswith(("AVX", "SSE")) and not isa.startswith(("AVX512", "AVX10")):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " avx512f" not in flags


def batch_norm_by_matmul(x, gamma, beta, epsilon: float):
    """Training-mode batch norm (channels last, float32) as the fused op computes it: the batch's mean and variance
    by two matrix-vector products, one multiply-add to normalize, and the fused op's training-mode gradient.
    Returns the outputs, the mean and the variance corrected as the fused op's (n / (n - 1))."""

    @tf.custom_gradient
    def batch_norm(x, gamma, beta):
        flat = tf.reshape(x, [-1, x.shape[-1]])
        count = tf.cast(tf.shape(flat)[0], tf.float32)
        weights = tf.fill(tf.stack([1, tf.shape(flat)[0]]), 1.0 / count)
        mean = tf.matmul(weights, flat)[0]
        variance = tf.maximum(tf.matmul(weights, tf.square(flat))[0] - tf.square(mean), 0.0)
        scale = gamma * tf.math.rsqrt(variance + epsilon)
        outputs = x * scale + (beta - mean * scale)

        def grad(d_outputs, d_mean, d_variance):
            d_x, d_gamma, d_beta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=d_outputs, x=x, scale=gamma, reserve_space_1=mean, reserve_space_2=variance,
                reserve_space_3=tf.zeros([0]), epsilon=epsilon, is_training=True)
            return d_x, d_gamma, d_beta

        return (outputs, mean, variance * count / tf.maximum(count - 1.0, 1.0)), grad

    return batch_norm(x, gamma, beta)


@keras.saving.register_keras_serializable(package="digits")
class FusedBatchNorm(layers.Layer):
    """Keras BatchNormalization's maths (channels last) on TensorFlow's fused kernel: much faster on CPUs."""

    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta", autocast=False)
        self.moving_mean = self.add_weight(shape=channels, initializer="zeros", name="moving_mean",
                                           trainable=False, autocast=False)
        self.moving_variance = self.add_weight(shape=channels, initializer="ones", name="moving_variance",
                                               trainable=False, autocast=False)

    def call(self, inputs, training=False):
        inputs = tf.cast(inputs, self.compute_dtype)
        if not training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
            return outputs
        if inputs.dtype == tf.float32 and stats_by_matmul():
            outputs, mean, variance = batch_norm_by_matmul(
                inputs, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta), self.epsilon)
        else:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="digits")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over the first 15% of steps, then cosine decay towards zero."""

    def __init__(self, peak: float, total_steps: int):
        self.peak, self.total_steps = float(peak), int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = max(1.0, 0.15 * self.total_steps)
        progress = tf.minimum((step - warm) / max(1.0, self.total_steps - warm), 1.0)
        decay = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warm, self.peak * (step + 1.0) / warm, tf.maximum(decay, self.peak * 1e-3))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps}


def _conv_bn(filters, kernel, **kwargs):
    # momentum 0.9: the moving statistics keep up with a high starting rate, so holdout scores mean something early
    return [layers.Conv2D(filters, kernel, activation="relu", **kwargs), FusedBatchNorm(momentum=0.9)]


def _strong():
    """The best public kernel's net: two [conv3-BN, conv3-BN, strided conv5-BN, dropout] blocks, conv4-128."""
    stack = []
    for filters in (32, 64):
        stack += _conv_bn(filters, 3) + _conv_bn(filters, 3)
        stack += _conv_bn(filters, 5, strides=2, padding="same") + [layers.Dropout(0.4)]
    return stack + _conv_bn(128, 4) + [layers.Flatten(), layers.Dropout(0.4)]


def _lenet():
    """A light LeNet-style net: two conv-pool stages and a dense layer; fast on a CPU."""
    return [
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.3),
    ]


def _lite():
    """Fewer channels at full resolution: conv3-16, strided conv3-32, conv3-32, strided conv3-64, conv3-96."""
    stack = _conv_bn(16, 3) + _conv_bn(32, 3, strides=2, padding="same")
    stack += _conv_bn(32, 3) + _conv_bn(64, 3, strides=2, padding="same") + [layers.Dropout(0.25)]
    return stack + _conv_bn(96, 3) + [layers.Flatten(), layers.Dropout(0.3)]


# The tutorial recipes of seed-recipes.md (configs/recipes/): each body stops before its Dense 10 softmax head.


def _lenet_tutorial():
    """A LeNet-style tutorial: conv30@5 - pool - conv15@3 - pool - dense 500 - dropout 0.5 (197,855 params)."""
    return [
        layers.Conv2D(30, 5, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(15, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(500, activation="relu"),
        layers.Dropout(0.5),
    ]


def _ann_baseline():
    """A plain dense network: 784 pixels - dense 100 (79,510 params)."""
    return [layers.Flatten(), layers.Dense(100, activation="relu")]


def _cnn_baseline():
    """Three same-padded conv3-pool stages (64, 32, 32 filters), then dense 100 (80,662 params)."""
    stack = []
    for filters in (64, 32, 32):
        stack += [layers.Conv2D(filters, 3, padding="same", activation="relu"), layers.MaxPooling2D(padding="same")]
    return stack + [layers.Flatten(), layers.Dense(100, activation="relu")]


def _kaggle_rmsprop():
    """The Kaggle blog's net: conv30@5 - pool - conv15@3 - dropout 0.2 - dense 128 - dense 50."""
    return [
        layers.Conv2D(30, 5, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(15, 3, activation="relu"),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(50, activation="relu"),
    ]


def _tf_tutorial():
    """The TensorFlow tutorial's net: conv32 - pool - conv64 - pool - conv64 - dense 64 (all 3x3 convs)."""
    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
    ]


def _simple_cnn():
    """The lecture's net: conv32@3 - pool - conv64@3 - pool - dense 128."""
    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
    ]


ARCHITECTURES = {
    "strong": _strong,
    "lite": _lite,
    "lenet": _lenet,
    "lenet-tutorial": _lenet_tutorial,
    "ann-baseline": _ann_baseline,
    "cnn-baseline": _cnn_baseline,
    "kaggle-rmsprop": _kaggle_rmsprop,
    "tf-tutorial": _tf_tutorial,
    "simple-cnn": _simple_cnn,
}


def make_model(name: str, num_classes: int = 10, l2: float = 0.0, dropout: float = 0.0,
               seed: int | None = None) -> keras.Model:
    """Build the named architecture for 28x28x1 inputs in [0, 1], ending in a float32 softmax.

    `l2` puts L2 weight decay on every Dense layer's kernel (the head's too); `dropout` adds a Dropout
    layer of that rate before the first Dense layer. Both default to off and add no parameters. With a `seed`,
    every kernel's initial values come from (seed, layer) alone, not from Python's global `random` (which
    Keras draws default seeds from, and which other threads of a process, such as a Dask worker's, also draw on).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    stack = [*ARCHITECTURES[name](), layers.Dense(num_classes)]
    if l2:
        stack = [_with_l2(layer, l2) if isinstance(layer, layers.Dense) else layer for layer in stack]
    if dropout:
        first_dense = next(i for i, layer in enumerate(stack) if isinstance(layer, layers.Dense))
        stack.insert(first_dense, layers.Dropout(dropout))
    if seed is not None:
        stack = [_seeded(layer, seed * 100 + position) for position, layer in enumerate(stack)]
    head = [layers.Activation("softmax", dtype="float32")]
    return keras.Sequential([keras.Input((28, 28, 1)), *stack, *head], name=name)


def _seeded(layer, seed: int):
    """The same layer, not yet built, with its kernel initializer seeded; layers without a kernel as they are."""
    config = layer.get_config()
    if not isinstance(config.get("kernel_initializer"), dict):
        return layer
    initializer = {**config["kernel_initializer"]}
    initializer["config"] = {**initializer.get("config", {}), "seed": seed}
    return type(layer).from_config({**config, "kernel_initializer": initializer})


def _with_l2(layer, l2: float):
    """The same Dense layer, not yet built, with an L2 penalty on its kernel."""
    return layers.Dense.from_config({**layer.get_config(), "kernel_regularizer": keras.regularizers.L2(l2)})


def make_optimizer(cfg, learning_rate) -> keras.optimizers.Optimizer:
    """The config's optimizer ("adam", "sgd" or "rmsprop") at `learning_rate`, a float or a schedule."""
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=cfg.momentum)
    if cfg.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (known: adam, sgd, rmsprop)")


def load_model(path, for_training: bool = False) -> keras.Model:
    """Load a saved member (this module registers the custom objects); with its optimizer only to train on."""
    return keras.models.load_model(path, compile=for_training)
