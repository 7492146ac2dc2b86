"""A run's report: PNG figures (matplotlib, Agg) and one self-contained report.html, from its saved files."""

import base64
import html
import json
from pathlib import Path

import numpy as np

from . import atomic, ensemble, manifest, runs, split
from .errors import InputError

SAMPLES_PER_CLASS = 10
WORST_MISTAKES = 24
MOSAIC_CELL = 28 + 4  # an image and the blank gap after it, in pixels


def save_train_samples(run_dir: Path, pixels: np.ndarray, labels: np.ndarray, seed: int):
    """Keep a few random training images per digit and the class counts: the report's view of the data."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == d))[:SAMPLES_PER_CLASS] for d in range(10)])
    atomic.save_npz(Path(run_dir) / runs.SAMPLES_FILE, pixels=pixels[chosen], labels=labels[chosen],
                    counts=np.bincount(labels, minlength=10))


def build(run_dir: Path) -> Path:
    """Write every figure into run_dir/figures and run_dir/report.html; return the report's path."""
    run = load_run(run_dir)
    written = []
    for name, caption, draw in _figures(run):
        fig = _new_figure()
        draw(fig, run)
        path = run["dir"] / runs.FIGURES_DIR / name
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append((name, caption, path))
    target = run["dir"] / runs.REPORT_FILE
    atomic.write_text(target, _html(run, written))
    return target


def outputs(run_dir: Path) -> list[Path]:
    """The files `build` writes for this run: report.html and every figure."""
    run = load_run(run_dir)
    return [run["dir"] / runs.REPORT_FILE, *[run["dir"] / runs.FIGURES_DIR / name for name, _, _ in _figures(run)]]


def _figures(run) -> list[tuple]:
    """(file name, caption, drawing function) of each figure of the report."""
    scored = "Out-of-fold (each row predicted by the members that held it out)" if run["folds"] else \
        "Ensemble, on the holdout"
    by_size = "accuracy_by_size" in run["metrics"]["ensemble"]  # a shared holdout: one set of rows for all members
    return [
        ("train_samples.png", "Training data: random samples of each digit", _samples_figure),
        ("class_distribution.png", "Training data: images per digit", _distribution_figure),
        *[(f"member_m{m['index']:02d}.png", f"Member {m['index']} ({m['architecture']}): training history",
           _member_figure(m)) for m in run["members"] if m["history"]],
        ("confusion_matrix.png", f"{scored}: confusion matrix", _confusion_figure),
        ("worst_mistakes.png", f"{scored}: most confident mistakes", _mistakes_figure),
        *([("accuracy_by_size.png", "Ensemble size versus holdout accuracy", _size_figure)] if by_size else []),
    ]


def _need(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found; {hint}")
    return path


def load_run(run_dir: Path) -> dict:
    """Everything the report draws, read from the run folder's saved files (nothing is retrained)."""
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    unfinished = "the run has not finished; finish it with `digits train --resume RUN`"
    metrics = json.loads(_need(run_dir / runs.METRICS_FILE, unfinished).read_text())
    _need(run_dir / runs.HOLDOUT_FILE, "not a run folder")
    if not runs.oof_file(run_dir).is_file():  # finished before oof.npz existed: rebuilt from the members' files
        ensemble.rebuild_oof(run_dir, [member["index"] for member in metrics["members"]])
    the_split, oof = split.load(run_dir), np.load(runs.oof_file(run_dir))
    position = np.searchsorted(the_split.rows, oof["row"])  # the scored rows' places in the split
    labels, probs = oof["label"].astype(np.int64), oof["probs"]
    members = []
    for info in metrics["members"]:
        state_file = runs.member_dir(run_dir, info["index"]) / runs.STATE_FILE
        history = json.loads(state_file.read_text())["history"] if state_file.is_file() else []
        members.append({**info, "history": history})
    samples_file = run_dir / runs.SAMPLES_FILE
    samples = dict(np.load(samples_file)) if samples_file.is_file() else None
    return {"dir": run_dir, "metrics": metrics, "config": config, "labels": labels,
            "pixels": the_split.pixels[position], "probs": probs, "members": members, "samples": samples,
            "folds": the_split.folds, "scored": "out-of-fold" if the_split.folds else "holdout",
            "pseudo": manifest.read(run_dir).get("pseudo_label")}


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts (10, 10): row = true digit, column = predicted digit (every digit, even one never seen)."""
    import sklearn.metrics

    return sklearn.metrics.confusion_matrix(labels, predicted, labels=np.arange(10))


def _new_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image_grid(fig, images, titles, columns: int):
    rows = max(1, -(-len(images) // columns))
    axes = fig.subplots(rows, columns, squeeze=False)
    for position, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if position < len(images):
            ax.imshow(np.asarray(images[position]).reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[position], fontsize=8)
        else:
            ax.axis("off")
    return axes


def _mosaic(rows: list, columns: int) -> np.ndarray:
    """Images of 784 pixels tiled into one array, MOSAIC_CELL apart: one imshow draws a whole grid."""
    gap = MOSAIC_CELL - 28
    canvas = np.zeros((len(rows) * MOSAIC_CELL - gap, columns * MOSAIC_CELL - gap), np.float32)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = r * MOSAIC_CELL, c * MOSAIC_CELL
            canvas[top:top + 28, left:left + 28] = np.asarray(image).reshape(28, 28)
    return canvas


def _samples_figure(fig, run):
    samples = run["samples"]
    title = "Random training samples, one row per digit"
    if samples is None:
        title = "Holdout samples (this run saved no training samples)"
        labels, pixels = run["labels"], run["pixels"]
        chosen = np.concatenate([np.flatnonzero(labels == d)[:SAMPLES_PER_CLASS] for d in range(10)])
        samples = {"labels": labels[chosen], "pixels": pixels[chosen]}
    rows = [samples["pixels"][samples["labels"] == digit][:SAMPLES_PER_CLASS] for digit in range(10)]
    fig.set_size_inches(6.4, 7.0)
    ax = fig.subplots()
    ax.imshow(_mosaic(rows, SAMPLES_PER_CLASS), cmap="gray_r", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([14 + MOSAIC_CELL * digit for digit in range(10)], [str(digit) for digit in range(10)], fontsize=11)
    ax.tick_params(length=0)
    fig.suptitle(title)


def _distribution_figure(fig, run):
    groups = [(run["scored"], np.bincount(run["labels"], minlength=10))]
    if run["samples"] is not None:
        groups.insert(0, ("training", run["samples"]["counts"]))
    fig.set_size_inches(5 * len(groups) + 1, 4)
    for ax, (name, counts) in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups, strict=True):
        ax.bar_label(ax.bar(range(10), counts, color="C0" if name == "training" else "C1"), fontsize=8, padding=2)
        ax.set_xticks(range(10))
        ax.set_xlabel("digit")
        ax.set_ylabel("images")
        ax.set_title(f"{name}: {int(counts.sum()):,} images")
        ax.margins(y=0.12)
    fig.suptitle("Class distribution")


def _member_figure(member):
    def draw(fig, run):
        history = member["history"]
        epochs = np.arange(1, len(history) + 1)
        rates = [h.get("learning_rate", np.nan) for h in history]
        changes = [e for e in range(1, len(rates)) if not np.isclose(rates[e], rates[e - 1], rtol=1e-3)]
        fig.set_size_inches(13, 3.8)
        axes = fig.subplots(1, 3)
        for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
            ax.plot(epochs, [h.get(key, np.nan) for h in history], "o-", label="training (augmented)")
            ax.plot(epochs, [h.get(f"val_{key}", np.nan) for h in history], "s-", label="holdout")
            ax.set_title(label)
            ax.set_xlabel("epoch")
            if len(changes) <= 8:
                for index, epoch in enumerate(changes):
                    ax.axvline(epoch + 1, color="grey", linestyle=":",
                               label="learning rate changed" if index == 0 else None)
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8, loc="lower right")
        axes[2].step(epochs, rates, "o-", where="post", color="tab:green")
        axes[2].set_yscale("log")
        axes[2].set_title("learning rate (at each epoch's start)")
        axes[2].set_xlabel("epoch")
        for ax in axes:
            ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
            ax.grid(alpha=0.3)
        fig.suptitle(f"Member {member['index']} ({member['architecture']}): holdout accuracy "
                     f"{member['holdout_accuracy']:.4f}")

    return draw


def _confusion_figure(fig, run):
    from matplotlib.colors import PowerNorm

    matrix = confusion_matrix(run["labels"], run["probs"].argmax(1))
    fig.set_size_inches(7, 6.2)
    ax = fig.subplots()
    shown = ax.imshow(matrix, cmap="Blues", norm=PowerNorm(0.35, vmin=0, vmax=max(1, matrix.max())))
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > 0.5 * matrix.max() else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{run['scored'].capitalize()} confusion matrix: {matrix.sum():,} images, accuracy {accuracy:.4f}")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="images")


def _mistakes_figure(fig, run):
    labels, probs = run["labels"], run["probs"]
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:WORST_MISTAKES]
    if len(worst) == 0:
        fig.set_size_inches(6, 2)
        fig.text(0.5, 0.5, f"No {run['scored']} mistakes", ha="center", va="center", fontsize=14)
        return
    columns = min(8, len(worst))
    rows = -(-len(worst) // columns)
    fig.set_size_inches(1.45 * columns + 0.4, 1.75 * rows + 0.7)
    titles = [f"true {labels[i]}, pred {predicted[i]}\n{probs[i, predicted[i]]:.1%} sure" for i in worst]
    _image_grid(fig, run["pixels"][worst], titles, columns)
    shown = f"The {len(worst)} most confident of" if len(worst) < len(wrong) else "All"
    fig.suptitle(f"{shown} {len(wrong)} {run['scored']} mistakes (image, true and predicted digit, confidence)")


def _size_figure(fig, run):
    curve = run["metrics"]["ensemble"]["accuracy_by_size"]
    sizes = np.arange(1, len(curve) + 1)
    fig.set_size_inches(7, 4.2)
    ax = fig.subplots()
    ax.plot(sizes, curve, "o-", label="ensemble of the first k members")
    ax.plot(sizes, [m["holdout_accuracy"] for m in run["members"]][: len(curve)], "x", color="grey",
            label="member k alone")
    ax.set_xticks(sizes)
    ax.set_xlabel("members averaged (in order)")
    ax.set_ylabel("holdout accuracy")
    ax.set_title("Ensemble size versus holdout accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(run, figures) -> str:
    metrics, ens = run["metrics"], run["metrics"]["ensemble"]
    summary = _table(["run", "config", "members", "train seconds"], [[
        metrics["run_id"], run["config"].get("name", ""), len(run["members"]), metrics["timings"]["train_seconds"]]])
    summary += f"<p>{html.escape(split.describe(metrics['cv']))}</p>"
    members = _table(["member", "architecture", "epochs run", "holdout accuracy", "train seconds"], [
        [m["index"], m["architecture"], m.get("epochs_run", ""),
         f"{m['holdout_accuracy']:.4f}", m.get("train_seconds", "")] for m in run["members"]])
    per_class = _table(["digit", "precision", "recall", "F1", "support"], [
        [c["label"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
        for c in ens["per_class"]])
    by_size = _table(["members averaged", "holdout accuracy"], [
        [k, f"{a:.4f}"] for k, a in enumerate(ens["accuracy_by_size"], start=1)]) if "accuracy_by_size" in ens else ""
    by_size = f"<h2>Ensemble size</h2>{by_size}" if by_size else ""
    pseudo = run["pseudo"]
    if pseudo:
        first = pseudo["first_round"]
        by_size += (f"<p>Pseudo-labels: members {first} and on also trained on {pseudo['test_images']:,} of the "
                    f"{pseudo['test_rows']:,} test images, labelled by members 0-{first - 1} averaged, where their "
                    f"probability was at least {pseudo['threshold']}.</p>")
    blocks = []
    for name, caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        blocks.append(f'<figure><a href="{runs.FIGURES_DIR}/{name}"><img src="data:image/png;base64,{data}" '
                      f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)} '
                      f"({runs.FIGURES_DIR}/{name})</figcaption></figure>")
    title = html.escape(f"Run {metrics['run_id']}")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}img{max-width:100%}"
             "figure{margin:2em 0}figcaption{color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body><h1>{title}</h1>{summary}<h2>Members</h2>{members}<h2>Per digit ({run['scored']})</h2>"
            f"{per_class}{by_size}<h2>Figures</h2>{''.join(blocks)}</body></html>\n")
