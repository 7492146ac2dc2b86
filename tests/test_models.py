"""The model factory, and the fused batch norm matching Keras's BatchNormalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from digits import models
from digits.config import ARCHITECTURE_NAMES
from digits.models import FusedBatchNorm, batch_norm_by_matmul, make_model, stats_by_matmul


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_every_architecture_maps_images_to_probabilities(name):
    model = make_model(name)
    probs = keras.ops.convert_to_numpy(model(np.random.default_rng(0).random((4, 28, 28, 1), np.float32)))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        make_model("resnet")


@pytest.mark.parametrize("by_matmul", [False, True])
def test_fused_batch_norm_matches_keras_batch_normalization(tmp_path, monkeypatch, by_matmul):
    monkeypatch.setattr(models, "stats_by_matmul", lambda: by_matmul)
    x = np.random.default_rng(1).normal(2.0, 3.0, (16, 6, 6, 5)).astype(np.float32)
    fused, reference = FusedBatchNorm(), keras.layers.BatchNormalization()
    for layer in (fused, reference):
        layer.build(x.shape)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-2)
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), atol=1e-2)

    model = keras.Sequential([keras.Input((6, 6, 5)), fused])
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


def test_batch_norm_by_matmul_matches_the_fused_op_and_its_gradient():
    rng = np.random.default_rng(2)
    x = tf.constant(np.maximum(rng.normal(0.3, 1.0, (32, 7, 7, 16)), 0.0).astype(np.float32))  # as after a ReLU
    gamma = tf.constant(rng.uniform(0.5, 1.5, 16).astype(np.float32))
    beta = tf.constant(rng.normal(size=16), tf.float32)
    d_out = tf.constant(rng.normal(size=x.shape).astype(np.float32))

    def outputs_and_gradients(batch_norm):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            out, mean, variance = batch_norm(x, gamma, beta, 1e-3)
        return [out, mean, variance, *tape.gradient(out, [x, gamma, beta], output_gradients=d_out)]

    def fused(x, gamma, beta, epsilon):
        return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon, is_training=True)

    for got, want, name in zip(outputs_and_gradients(batch_norm_by_matmul), outputs_and_gradients(fused),
                               ["outputs", "mean", "variance", "d_x", "d_gamma", "d_beta"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(want))), err_msg=name)


@pytest.mark.parametrize("environ, expected", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}, False),
])
def test_stats_by_matmul_only_where_onednn_trains_with_its_avx2_kernels(monkeypatch, environ, expected):
    monkeypatch.setattr(models.tf.config, "list_physical_devices", lambda kind=None: [])  # as on a CPU-only machine
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert stats_by_matmul.__wrapped__() is expected


def test_stats_by_matmul_is_off_where_a_gpu_trains(monkeypatch):
    monkeypatch.setattr(models.tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert stats_by_matmul.__wrapped__() is False


def test_a_net_trained_with_stats_by_matmul_learns_its_scale_and_repeats_its_bytes(monkeypatch):
    monkeypatch.setattr(models, "stats_by_matmul", lambda: True)
    rng = np.random.default_rng(3)
    x, y = rng.random((64, 28, 28, 1), np.float32), rng.integers(0, 10, 64)

    def trained_weights():
        keras.utils.set_random_seed(5)
        model = make_model("lite")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        norm = next(layer for layer in model.layers if isinstance(layer, FusedBatchNorm))
        assert not np.allclose(norm.gamma, 1.0) and not np.allclose(norm.beta, 0.0)  # their gradients reached them
        return b"".join(np.asarray(w).tobytes() for w in model.get_weights())

    assert trained_weights() == trained_weights()


def test_a_one_cycle_model_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    from digits.config import load_config
    from digits.member import build_model

    cfg = load_config("quick", {"schedule": "onecycle"})
    model = build_model(cfg, "lite", steps_per_epoch=10)
    model.save(tmp_path / "m.keras")
    code = (f"from digits.models import load_model; m = load_model({str(tmp_path / 'm.keras')!r}, "
            "for_training=True); print(type(m.optimizer._learning_rate).__name__, "
            "m.optimizer._learning_rate.total_steps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["OneCycle", str(cfg.epochs * 10)]
