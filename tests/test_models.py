"""The model factory, and the fused batch norm matching Keras's BatchNormalization."""

import keras
import numpy as np
import pytest

from digits.config import ARCHITECTURE_NAMES
from digits.models import FusedBatchNorm, make_model


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_every_architecture_maps_images_to_probabilities(name):
    model = make_model(name)
    probs = keras.ops.convert_to_numpy(model(np.random.default_rng(0).random((4, 28, 28, 1), np.float32)))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        make_model("resnet")


def test_fused_batch_norm_matches_keras_batch_normalization(tmp_path):
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
