"""The model factory: every network the configs can name, built as a Keras `Sequential`."""

import math

import keras
import tensorflow as tf
from keras import layers


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
    return [layers.Conv2D(filters, kernel, activation="relu", **kwargs), FusedBatchNorm()]


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


def _small():
    """The strong net without each stage's first 3x3 conv, lighter dropout: ~99.5% in 5 CPU epochs."""
    stack = []
    for filters in (32, 64):
        stack += _conv_bn(filters, 3) + _conv_bn(filters, 5, strides=2, padding="same") + [layers.Dropout(0.3)]
    return stack + _conv_bn(128, 4) + [layers.Flatten(), layers.Dropout(0.3)]


ARCHITECTURES = {"strong": _strong, "small": _small, "lenet": _lenet}


def make_model(name: str, num_classes: int = 10) -> keras.Model:
    """Build the named architecture for 28x28x1 inputs in [0, 1], ending in a float32 softmax."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    body = ARCHITECTURES[name]()
    head = [layers.Dense(num_classes), layers.Activation("softmax", dtype="float32")]
    return keras.Sequential([keras.Input((28, 28, 1)), *body, *head], name=name)


def load_model(path, for_training: bool = False) -> keras.Model:
    """Load a saved member (this module registers the custom objects); with its optimizer only to train on."""
    return keras.models.load_model(path, compile=for_training)
