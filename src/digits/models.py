"""The model factory: every network the configs can name, built as a Keras `Sequential`."""

import keras
from keras import layers


def _conv_bn(filters, kernel, **kwargs):
    return [layers.Conv2D(filters, kernel, activation="relu", **kwargs), layers.BatchNormalization()]


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


def _slim():
    """The strong net's shape at half the width: most of its accuracy for about a third of the work."""
    stack = []
    for filters in (16, 32):
        stack += _conv_bn(filters, 3) + _conv_bn(filters, 3)
        stack += _conv_bn(filters, 5, strides=2, padding="same") + [layers.Dropout(0.3)]
    return stack + _conv_bn(96, 4) + [layers.Flatten(), layers.Dropout(0.3)]


ARCHITECTURES = {"strong": _strong, "lenet": _lenet, "slim": _slim}


def make_model(name: str, num_classes: int = 10) -> keras.Model:
    """Build the named architecture for 28x28x1 inputs in [0, 1], ending in a float32 softmax."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    body = ARCHITECTURES[name]()
    head = [layers.Dense(num_classes), layers.Activation("softmax", dtype="float32")]
    return keras.Sequential([keras.Input((28, 28, 1)), *body, *head], name=name)
