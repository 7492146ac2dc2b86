"""`digits predict-image`: real MNIST digits drawn as a user's photo keep their prediction."""

import json

import numpy as np
import pytest
from PIL import Image

from digits import data, mnist, predict_image
from digits.cli import main
from digits.errors import InputError


@pytest.fixture(scope="module")
def digits(mnist_idx):
    """The first 400 MNIST test digits: (pixels uint8 (400, 784), labels)."""
    pixels = mnist.read_idx(mnist_idx / "t10k-images-idx3-ubyte")[:400].reshape(-1, 784)
    return pixels, mnist.read_idx(mnist_idx / "t10k-labels-idx1-ubyte")[:400]


@pytest.fixture(scope="module")
def direct(trained_run, digits):
    """The run's predictions for the digits in their 28x28 form."""
    _, run_dir = trained_run
    models = predict_image.load_models(run_dir)
    return predict_image.ensemble_probs(models, digits[0]).argmax(1)


def render(pixels, rng, ink=(0, 0, 0), paper=(255, 255, 255), noise=0.0) -> Image.Image:
    """A 28x28 digit as a user's photo: 10x upscaled (280x280), off-centre on a larger RGB sheet."""
    strength = Image.fromarray(np.asarray(pixels, np.uint8).reshape(28, 28)).resize((280, 280), Image.BICUBIC)
    height, width = int(rng.integers(330, 480)), int(rng.integers(330, 520))
    alpha = np.zeros((height, width, 1), np.float32)
    top, left = int(rng.integers(0, height - 280)), int(rng.integers(0, width - 280))
    alpha[top: top + 280, left: left + 280, 0] = np.asarray(strength, np.float32) / 255.0
    sheet = np.float32(paper) * (1 - alpha) + np.float32(ink) * alpha + rng.normal(0, noise, alpha.shape)
    return Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8))


def test_rendered_digits_keep_their_prediction(trained_run, digits, direct, tmp_path):
    _, run_dir = trained_run
    pixels, labels = digits
    chosen = np.flatnonzero(direct == labels)[:200]
    assert len(chosen) == 200
    rng = np.random.default_rng(7)
    files = {"png": [], "jpg": []}
    for index in chosen:
        photo = render(pixels[index], rng).convert("L")  # dark ink on white
        for suffix in files:
            path = tmp_path / f"d{index}.{suffix}"
            photo.save(path, quality=85)  # PNG ignores quality
            files[suffix].append(path)
    for suffix, paths in files.items():
        results = predict_image.predict_files(paths, run_dir)
        agreement = np.mean([r["digit"] for r in results] == direct[chosen])
        assert agreement >= 0.95, (suffix, agreement)


def test_preprocessing_recovers_the_mnist_digit(digits):
    pixels, _ = digits
    rng = np.random.default_rng(1)
    digit = pixels[0].reshape(28, 28)
    variants = {
        "dark on white": render(digit, rng).convert("L"),
        "blue ink on cream, noisy RGB": render(digit, rng, ink=(30, 40, 150), paper=(250, 240, 215), noise=4),
        "light on dark": render(digit, rng, ink=(245, 245, 245), paper=(25, 25, 25)),
    }
    gray = np.asarray(variants["dark on white"])
    variants["16-bit grayscale"] = Image.fromarray(gray.astype(np.uint16) * 257)
    black = np.zeros((*gray.shape, 3), np.uint8)
    variants["black ink on transparent"] = Image.fromarray(np.dstack([black, 255 - gray]))
    for name, image in variants.items():
        out = predict_image.preprocess_image(image, name)
        assert out.shape == (28, 28) and out.dtype == np.uint8, name
        rows, cols = np.nonzero(out)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21), name  # longer side scaled to 20 px
        mass = out.astype(float) / out.sum()
        centre = (mass.sum(1) @ np.arange(28), mass.sum(0) @ np.arange(28))
        assert np.allclose(centre, 14, atol=0.75), (name, centre)
        assert out.max() == 255 and np.abs(out.astype(int) - digit).mean() < 20, name


def test_blank_unreadable_and_missing_inputs_exit_2(trained_run, tmp_path, capsys):
    _, run_dir = trained_run
    blank, text, missing = tmp_path / "blank.png", tmp_path / "notes.png", tmp_path / "missing.png"
    Image.new("RGB", (300, 200), (255, 255, 255)).save(blank)
    text.write_text("not an image")
    cases = [
        ([str(blank)], f"{blank}: no ink found"),
        ([str(text)], f"{text}: not a readable PNG/JPEG image"),
        ([str(missing)], f"{missing}: file not found"),
    ]
    for images, message in cases:
        assert main(["predict-image", *images, "--run", str(run_dir)]) == 2
        assert message in capsys.readouterr().err
    good = tmp_path / "good.png"
    render(np.eye(28, dtype=np.uint8) * 255, np.random.default_rng(0)).save(good)
    assert main(["predict-image", str(good), "--run", str(tmp_path / "no-run")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "config.json").write_text("{}")
    assert main(["predict-image", str(good), "--run", str(tmp_path / "empty-run")]) == 2
    assert "no finished members" in capsys.readouterr().err


def test_cli_text_json_and_saved_preprocessed(trained_run, digits, direct, tmp_path, capsys, monkeypatch):
    _, run_dir = trained_run
    pixels, labels = digits
    index = int(np.flatnonzero(direct == labels)[0])
    rng = np.random.default_rng(3)
    rgb, gray = tmp_path / "rgb.jpg", tmp_path / "gray.png"
    render(pixels[index], rng, ink=(150, 20, 20), paper=(235, 235, 250)).save(rgb, quality=90)
    render(pixels[index], rng).convert("L").save(gray)
    seen = []  # what the model was given, as it crosses data.to_images (the one pixels-to-[0,1] step)
    to_images = data.to_images
    monkeypatch.setattr(data, "to_images", lambda p: seen.append(np.array(p)) or to_images(p))

    assert main(["predict-image", str(rgb), str(gray), "--run", str(run_dir), "--json",
                 "--save-preprocessed", str(tmp_path / "seen")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run"] == str(run_dir)
    for item, path in zip(result["predictions"], (rgb, gray), strict=True):
        assert item["image"] == str(path) and item["digit"] == direct[index]
        probabilities = [t["probability"] for t in item["top3"]]
        assert item["top3"][0]["digit"] == item["digit"] and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1.0001 and len({t["digit"] for t in item["top3"]}) == 3
        saved = np.asarray(Image.open(item["preprocessed"]))
        assert saved.shape == (28, 28)
        assert np.array_equal(saved, predict_image.preprocess_image(predict_image.load_image(path)))
    assert len(seen) == 1  # both images in one batch, through the shared to_images
    assert np.array_equal(seen[0].reshape(2, 28, 28), [np.asarray(Image.open(tmp_path / "seen" / f"{n}.png"))
                                                         for n in ("rgb", "gray")])

    assert main(["predict-image", str(gray), "--run", str(run_dir)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{gray}: {direct[index]}  (top 3: {direct[index]}: ")


def test_preprocess_rejects_a_blank_array():
    with pytest.raises(InputError, match="photo.png: no ink found"):
        predict_image.preprocess_image(np.full((50, 40), 200, np.uint8), "photo.png")
