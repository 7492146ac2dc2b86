"""Predict the digit in a user's own image: MNIST-style preprocessing, then the run's ensemble."""

import json
from pathlib import Path

import numpy as np

from . import atomic, data, ensemble, runs
from .errors import InputError

BOX = 20  # MNIST scaled each digit's longer side to 20 px ...
CENTRE = 14.0  # ... and put its centre of mass here (row and column) in the 28x28 image
NOISE_FLOOR = 0.15  # ink darker than the paper by less than this (of the full contrast) is noise
MIN_CONTRAST = 40  # grey levels between paper and ink below which an image counts as blank


def load_image(path):
    """Open a PNG/JPEG (any size and mode) as a PIL image, upright; InputError if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: not a readable PNG/JPEG image ({err})") from None


def preprocess_image(image, name: str = "image") -> np.ndarray:
    """The 28x28 uint8 digit (ink 255 on 0, like a CSV row) MNIST would make of `image`; to_images scales it."""
    # grayscale; invert light paper; crop to the ink; longer side to 20 px; centre of mass at the centre
    gray = _grayscale(image)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = float(np.median(border))
    if paper > 127:
        gray, paper = 255.0 - gray, 255.0 - paper
    contrast = float(gray.max()) - paper
    if contrast < MIN_CONTRAST:
        raise InputError(f"{name}: no ink found (the image is blank or has too little contrast)")
    ink = np.clip((gray - paper) / contrast, 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    box = _scale_longer_side(ink, BOX)
    return _centre_of_mass_in_28(box)


def _grayscale(image) -> np.ndarray:
    """Float 0..255 luminance; transparent areas become paper of the opposite shade to the ink."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, np.uint8))
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grayscale: PIL's "L" would clip it
        values = np.asarray(image, np.float32)
        return values * np.float32(255 / 65535) if values.max() > 255 else values
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        opaque = np.asarray(rgba.convert("L"))[alpha > 127]
        shade = 255 if opaque.size == 0 or float(np.mean(opaque)) < 128 else 0
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (shade, shade, shade, 255)), rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _scale_longer_side(ink: np.ndarray, side: int) -> np.ndarray:
    """Resize (anti-aliased) so the longer side is `side` px; the strongest ink becomes 1 again."""
    from PIL import Image

    height, width = ink.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.LANCZOS))
    resized = np.clip(resized, 0.0, None)
    return resized / resized.max()


def _centre_of_mass_in_28(box: np.ndarray) -> np.ndarray:
    """Place `box` in a 28x28 field, shifted (whole pixels, kept inside) so its centre of mass is the centre."""
    side = data.IMAGE_SIDE
    height, width = box.shape
    total = box.sum()
    com_row = float((box.sum(1) * np.arange(height)).sum() / total)
    com_col = float((box.sum(0) * np.arange(width)).sum() / total)
    top = min(max(round(CENTRE - com_row), 0), side - height)
    left = min(max(round(CENTRE - com_col), 0), side - width)
    field = np.zeros((side, side), np.float32)
    field[top: top + height, left: left + width] = box
    return np.rint(field * 255.0).astype(np.uint8)


def load_models(run_dir: Path) -> list:
    """The best model of every finished member of the run."""
    from .models import load_model

    runs.read_config(run_dir)
    indices = runs.finished_members(run_dir)
    if not indices:
        raise InputError(f"{run_dir}: no finished members ({runs.MEMBERS_DIR}/mNN/{runs.DONE_FILE}); "
                         "train the run first")
    models = []
    for index in indices:
        path = runs.member_dir(run_dir, index) / runs.MODEL_FILE
        if not path.is_file():
            raise InputError(f"{path}: file not found (member {index} is marked done)")
        models.append(load_model(path))
    return models


def ensemble_probs(models: list, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
    """Average of the members' softmax for flat 0..255 pixels (N, 784), prepared as in training."""
    from .member import predict_probs

    images = data.to_images(pixels)
    return ensemble.average([predict_probs(model, images, tta=tta) for model in models])


def predict_files(images: list, run_dir: Path, save_dir=None) -> list[dict]:
    """Preprocess each image file, predict with the run's ensemble; one result dict per image."""
    run_config = runs.read_config(run_dir)
    pixels = np.stack([preprocess_image(load_image(path), str(path)) for path in images])
    saved = _save_preprocessed(images, pixels, Path(save_dir)) if save_dir else [None] * len(images)
    probs = ensemble_probs(load_models(run_dir), pixels.reshape(len(images), -1), run_config.get("tta", False))
    results = []
    for path, row, saved_path in zip(images, probs, saved, strict=True):
        top = np.argsort(row)[::-1][:3]
        result = {"image": str(path), "digit": int(top[0]),
                  "top3": [{"digit": int(d), "probability": round(float(row[d]), 6)} for d in top]}
        if saved_path:
            result["preprocessed"] = str(saved_path)
        results.append(result)
    return results


def _save_preprocessed(images: list, pixels: np.ndarray, save_dir: Path) -> list[Path]:
    """Write each 28x28 image the model sees as `<name>.png` in `save_dir` (a counter keeps names unique)."""
    from PIL import Image

    written = []
    for path, image in zip(images, pixels, strict=True):
        target = save_dir / f"{Path(path).stem}.png"
        count = 2
        while target in written:
            target = save_dir / f"{Path(path).stem}-{count}.png"
            count += 1
        with atomic.atomic_path(target) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        written.append(target)
    return written


def command(images: list[str], run_dir: Path, as_json: bool = False, save_dir=None):
    """`digits predict-image`: print each image's digit and top-3 probabilities (or JSON)."""
    results = predict_files(images, run_dir, save_dir)
    if as_json:
        print(json.dumps({"run": str(run_dir), "predictions": results}, indent=2))
        return
    for result in results:
        top3 = ", ".join(f"{t['digit']}: {t['probability']:.1%}" for t in result["top3"])
        saved = f"  (preprocessed: {result['preprocessed']})" if "preprocessed" in result else ""
        print(f"{result['image']}: {result['digit']}  (top 3: {top3}){saved}")
