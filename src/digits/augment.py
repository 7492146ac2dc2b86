"""Training-time augmentation: per-image warps drawn from a stateless seed, so exact resume holds (never flips)."""

import math

from .config import TrainConfig
from .quiet import import_tensorflow

tf = import_tensorflow()

CENTRE = 13.5  # of a 28x28 image, in pixel coordinates


def augments(cfg: TrainConfig) -> bool:
    return bool(cfg.rotation_degrees or cfg.zoom or cfg.shift)


def affine_warps(count, seed, cfg: TrainConfig):
    """Per-image projective transforms (rotation, zoom, shift about the centre), drawn from a stateless `seed`."""
    uniform = tf.random.stateless_uniform([count, 5], seed=seed, minval=-1.0, maxval=1.0)
    angle = uniform[:, 0] * (cfg.rotation_degrees * math.pi / 180.0)
    zoom_x, zoom_y = 1.0 + uniform[:, 1] * cfg.zoom, 1.0 + uniform[:, 2] * cfg.zoom
    shift_x, shift_y = uniform[:, 3] * (cfg.shift * 28.0), uniform[:, 4] * (cfg.shift * 28.0)
    a0, a1 = zoom_x * tf.cos(angle), -zoom_x * tf.sin(angle)
    b0, b1 = zoom_y * tf.sin(angle), zoom_y * tf.cos(angle)
    a2 = CENTRE - a0 * CENTRE - a1 * CENTRE - shift_x
    b2 = CENTRE - b0 * CENTRE - b1 * CENTRE - shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment(batch, seed, cfg: TrainConfig):
    """Small rotations, zooms and shifts in one bilinear warp per image (never flips: a flipped 2 is not a 2)."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=batch, transforms=affine_warps(tf.shape(batch)[0], seed, cfg), output_shape=tf.shape(batch)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
