"""Training-time augmentation: per-image warps drawn from a stateless seed, so exact resume holds (never flips)."""

import math

from .config import TrainConfig
from .quiet import import_tensorflow

tf = import_tensorflow()

SIZE = 28
CENTRE = (SIZE - 1) / 2


def augments(cfg: TrainConfig) -> bool:
    return bool(cfg.rotation_degrees or cfg.zoom or cfg.shift or cfg.elastic)


def affine_warps(count, seed, cfg: TrainConfig):
    """Per-image projective transforms (rotation, zoom, shift about the centre), drawn from a stateless `seed`.

    Each row maps an output pixel (x, y) to the input point (a0 x + a1 y + a2, b0 x + b1 y + b2).
    """
    uniform = tf.random.stateless_uniform([count, 5], seed=seed, minval=-1.0, maxval=1.0)
    angle = uniform[:, 0] * (cfg.rotation_degrees * math.pi / 180.0)
    zoom_x, zoom_y = 1.0 + uniform[:, 1] * cfg.zoom, 1.0 + uniform[:, 2] * cfg.zoom
    shift_x, shift_y = uniform[:, 3] * (cfg.shift * SIZE), uniform[:, 4] * (cfg.shift * SIZE)
    a0, a1 = zoom_x * tf.cos(angle), -zoom_x * tf.sin(angle)
    b0, b1 = zoom_y * tf.sin(angle), zoom_y * tf.cos(angle)
    a2 = CENTRE - a0 * CENTRE - a1 * CENTRE - shift_x
    b2 = CENTRE - b0 * CENTRE - b1 * CENTRE - shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _gaussian_kernel(sigma: float):
    radius = max(1, int(math.ceil(2 * sigma)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2 * sigma**2))
    return kernel / tf.reduce_sum(kernel)


def elastic_field(count, seed, pixels: float, sigma: float):
    """Smooth random displacements (Simard et al. 2003), [count, 28, 28, 2] in pixels, each component with a
    standard deviation of `pixels`: white noise blurred by a Gaussian of `sigma` pixels, rescaled."""
    noise = tf.random.stateless_normal([count, SIZE, SIZE, 2], seed=seed)
    kernel = _gaussian_kernel(sigma)
    spread = tf.reduce_sum(kernel**2)  # the separable 2D blur's gain on unit white noise
    blur = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 2, 1])
    field = tf.nn.depthwise_conv2d(noise, tf.reshape(blur, [-1, 1, 2, 1]), [1, 1, 1, 1], "SAME")
    field = tf.nn.depthwise_conv2d(field, tf.reshape(blur, [1, -1, 2, 1]), [1, 1, 1, 1], "SAME")
    return field * (pixels / spread)


def _bilinear(images, x, y):
    """Sample `images` [n, 28, 28, 1] at the points (x, y) [n, 28, 28], zero outside, bilinearly."""
    x0, y0 = tf.floor(x), tf.floor(y)
    count = tf.shape(images)[0]
    batch = tf.broadcast_to(tf.reshape(tf.range(count), [-1, 1, 1]), tf.shape(x))
    padded = tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]])  # a border of zeros catches points outside
    total = 0.0
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - tf.abs(x - xi)) * (1 - tf.abs(y - yi))
        xi = tf.cast(tf.clip_by_value(xi + 1, 0, SIZE + 1), tf.int32)
        yi = tf.cast(tf.clip_by_value(yi + 1, 0, SIZE + 1), tf.int32)
        total += weight * tf.gather_nd(padded, tf.stack([batch, yi, xi], axis=-1))
    return total[..., None]


def augment(batch, seed, cfg: TrainConfig):
    """Small rotations, zooms and shifts, and with `elastic` a smooth random distortion, in one bilinear resampling
    per image (never flips: a flipped 2 is not a 2)."""
    count = tf.shape(batch)[0]
    warps = affine_warps(count, seed, cfg)
    if not cfg.elastic:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=batch, transforms=warps, output_shape=tf.shape(batch)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
    grid_y, grid_x = tf.meshgrid(tf.range(SIZE, dtype=tf.float32), tf.range(SIZE, dtype=tf.float32), indexing="ij")
    field = elastic_field(count, seed + [0, 500_000], cfg.elastic, cfg.elastic_sigma)
    gx, gy = grid_x + field[..., 0], grid_y + field[..., 1]
    a = warps[:, :, None, None]
    x = a[:, 0] * gx + a[:, 1] * gy + a[:, 2]
    y = a[:, 3] * gx + a[:, 4] * gy + a[:, 5]
    return _bilinear(batch, x, y)
