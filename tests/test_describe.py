"""`digits describe`: each member's layers, output shapes and parameters, and the ensemble total."""

from digits import describe
from digits.cli import main
from digits.config import apply_overrides, load_config
from digits.models import make_model


def test_describe_cycles_architectures_over_members():
    cfg = apply_overrides(load_config("tiny"), {"members": 3, "architectures": ["lenet", "lite"]}, "test")
    text = describe.describe(cfg)
    lenet, lite = make_model("lenet").count_params(), make_model("lite").count_params()
    assert "lenet (members 0, 2)" in text
    assert "lite (member 1)" in text
    assert f"params: {lenet:,} (trainable {lenet:,}, non-trainable 0)" in text
    assert f"params: {lite:,} (trainable" in text  # lite has BatchNormalization: some non-trainable
    assert f"total: {2 * lenet + lite:,} params in 3 member(s) (2 x lenet, 1 x lite)" in text
    assert "Conv2D" in text and "(None, 28, 28, 32)" in text and "(None, 10)" in text


def test_describe_command(capsys):
    assert main(["describe", "--config", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config tiny: 2 member(s)")
    assert "schedule: ReduceLROnPlateau(monitor=val_accuracy, factor=0.5, patience=1" in out
    assert "MaxPooling2D" in out and "total:" in out
    assert main(["describe", "--config", "no-such-config"]) == 2
    assert "no-such-config" in capsys.readouterr().err
