"""`make bench`'s report: BENCHMARKS.md, and the tables between `<!-- bench:NAME -->` markers in README.md and
docs/*.md, rendered from the stored rows (docs/bench/*.json).

`python -m benchmarks.render` rewrites them from the stored rows alone (no measuring, no figures);
tests/test_docs.py renders them in memory and fails where a page differs.
"""

import json
import re
import statistics
from collections import Counter
from pathlib import Path

from benchmarks.targets import (
    CLASS_TITLES,
    CURVE_TARGETS,
    DECISION_SEED,
    DOCS,
    MATMUL_SHARE_TARGET,
    README,
    RECIPE_NOTES,
    RECIPE_TOLERANCE,
    RECIPES,
    REPORT,
    REPORT_SEED,
    RESULTS,
    SLOW_LAPTOP,
    TARGETS,
    THROUGHPUT_TARGET,
)

from digits import atomic, plan_table
from digits.config import budget_seconds

# a rendered block: its start marker, the rendered lines, its end marker, each marker a line of its own
BLOCK = re.compile(r"^<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- /bench:(?P=name) -->$", re.S | re.M)
MARKER = re.compile(r"^<!-- /?bench:([\w-]+) -->$", re.M)


def render_rates(figures: dict, cls: str) -> list:
    """The strong net's training rates in GFLOP/s, against TensorFlow's matmul rate measured in the same run."""
    rates = figures["rates"]
    flops, precision = rates["flops_per_image"], rates["trainer_precision"]
    goal = MATMUL_SHARE_TARGET[cls]
    lines = ["", f"The strong net costs {flops / 1e6:.0f} MFLOP to train on one image (2 per multiply-add of its convs "
             "and dense layer, times 3 for the forward and backward passes). The matmul is TensorFlow's, 4096 x 4096, "
             "on every core, in the same run.", "",
             "| training, strong net | img/s | GFLOP/s | of the matmul rate | target | pass |",
             "|---|---|---|---|---|---|",
             f"| matmul, {precision} (the trainer's precision) | | {rates['matmul_trainer']:,.0f} | 100% | | |"]
    if precision != "float32":
        lines.append(f"| matmul, float32 | | {rates['matmul_float32']:,.0f} | | | |")

    def row(name, values, matmul, target=None):
        middle = statistics.median(values)
        share = middle * flops / 1e9 / matmul
        judged = [f">= {target:.0%}", "PASS" if share >= target else "FAIL"] if target else []
        cells = [name, _spread(values, ",.0f"), f"{middle * flops / 1e9:,.0f}", f"{share:.0%}", *judged]
        return "| " + " | ".join(cells) + " |" + " |" * (6 - len(cells))

    for batch in ("64", "128"):
        if batch in figures:
            lines.append(row(f"plain Keras `model.fit`, float32, batch {batch}", figures[batch]["plain"],
                             rates["matmul_float32"]))
            lines.append(row(f"project trainer, one member, batch {batch}", figures[batch]["project"],
                             rates["matmul_trainer"]))
    lines.append(row("project trainer, two members at once (as planned: a process and half the cores each), "
                     "batch 128", rates["two_at_once"], rates["matmul_trainer"], goal))
    return lines


def _spread(values: list, fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} (range {format(min(values), fmt)}-{format(max(values), fmt)}, " \
           f"n={len(values)})"


def layout_text(runs: list) -> str:
    """Which Kaggle-shaped layout the runs were scored on (the decision or the report split) and how many there were."""
    seeds = {r.get("split_seed", DECISION_SEED) for r in runs}
    names = ", ".join(f"report (seed {s})" if s == REPORT_SEED else f"decision (seed {s})" if s == DECISION_SEED
                      else f"seed {s}" for s in sorted(seeds))
    return f"{names}, {len(runs)} run{'s' if len(runs) > 1 else ''}"


def _row_line(row: str, entry: dict, peer_seconds: float | None) -> tuple[str, str]:
    """One table line for a config row, and its PASS/FAIL/'' verdict."""
    runs, target = entry["figures"], TARGETS[row]
    acc, secs = statistics.median(r["accuracy"] for r in runs), statistics.median(r["seconds"] for r in runs)
    wanted, ok = [], True
    if "accuracy" in target:
        wanted.append(f">= {target['accuracy']:.2%}")
        ok &= acc >= target["accuracy"]
    if "seconds" in target:
        wanted.append(f"<= {target['seconds']} s")
        ok &= secs <= target["seconds"]
    ratio = ""
    if "peer_ratio" in target and peer_seconds:
        ratio = f"{secs / peer_seconds:.2f}x"
        wanted.append(f"<= {target['peer_ratio']}x peer")
        ok &= secs / peer_seconds <= target["peer_ratio"]
    plan, epochs = runs[-1].get("plan") or {}, runs[-1]["epochs"]
    same = len(set(epochs)) == 1
    shape = f"{len(epochs)} x {epochs[0]} ep" if same else f"{len(epochs)}: {' + '.join(map(str, epochs))} ep"
    if plan:
        shape += f" (planned {plan['members']} x {plan['epochs']} at {plan['train_images_per_second']:,.0f} img/s)"
    verdict = ("PASS" if ok else "FAIL") if wanted else ""
    label = {"demo": "`make demo` (Kaggle layout, 28,000 answers)",
             "fast-onecycle": "`fast` with `schedule=onecycle`"}.get(row, f"`{row}`")
    accuracy, seconds = _spread([r["accuracy"] for r in runs], ".2%"), _spread([r["seconds"] for r in runs], ".0f")
    line = (f"| {label} | {accuracy} | {seconds} | {ratio} | {shape} | {', '.join(wanted) or '(comparison)'} "
            f"| {verdict} | {entry['date']}, {entry['machine']} |")
    return line, verdict



def _stamps(data: dict) -> list[dict]:
    """A class's rows, and the curve's points (each stamped where it was measured)."""
    rows = [v for k, v in data.items() if k != "host"]
    return rows + data.get("curve", {}).get("figures", [])


def render(stored: dict) -> tuple[str, dict[str, list[str]]]:
    """BENCHMARKS.md from every class's stored rows, and README's tables (block name -> lines)."""
    lines = ["# Benchmarks", "",
             "Written by `make bench` from [docs/bench/](bench/) (one JSON file per CPU class; each row keeps the "
             "date, commit and machine it was measured on, as does each point of the budget curve). Data: MNIST's "
             "official split (train.csv = 60,000 rows, test.csv = 10,000) built offline from the checked IDX files, "
             "except `make demo` (Kaggle's layout: 42,000 / 28,000). Accuracy is against held-back labels that "
             "training never reads. Wall time runs from starting `digits train` to the validated submission (the "
             "demo: from building the CSVs to the score). Every config trains with `ReduceLROnPlateau`; `quick` and "
             "the demo plan members and epochs from a time budget measured on the machine they run on.", ""]
    demo = ["| CPU | layout | accuracy (test) | CV | wall time | members x epochs | target | pass | measured |",
            "|---|---|---|---|---|---|---|---|---|"]  # README's demo section
    recipes = {r: [f"`{r}`", f"{stored[c][r]['figures']['reported']:.2%}"] for c in stored for r in RECIPES
               if r in stored[c]}  # README: a row per recipe, the author's figure, then each class's
    recipe_header = ["config", "author's accuracy"]
    for cls in CLASS_TITLES:
        data = stored.get(cls)
        if not data:
            continue
        host = data["host"]
        isa = data.get("isa", {}).get("figures", {})
        lines += [f"## {CLASS_TITLES[cls]}", "",
                  f"- Machine of the last run: {host['cpu']}, {host['cores']} cores, flags "
                  f"{', '.join(host['cpu_flags']) or 'none beyond AVX2'}",
                  "- Rows measured on: " + "; ".join(sorted({v["machine"] for v in _stamps(data)}))
                  + ("; oneDNN capped by `ONEDNN_MAX_CPU_ISA=AVX2`: a laptop's instructions on a newer core, so a "
                     "real AVX2-only CPU is slower (budgeted rows adapt to it, the others take longer)"
                     if cls == "avx2" else ""),
                  f"- oneDNN instruction set in use: {isa.get('isa', 'not measured')}; "
                  f"compute precision: {isa.get('precision', 'not measured')}",
                  f"- Python {host['python']}, TensorFlow {host['tensorflow']}, Keras {host['keras']}, "
                  f"NumPy {host['numpy']}",
                  "- Commands: " + "; ".join(sorted({f"`{v['command']}` (commit {v['commit']}, {v['date']})"
                                                     for v in _stamps(data)})), "",
                  "| row | accuracy (test) | wall time (s) | vs peer | members x epochs | target | pass | measured |",
                  "|---|---|---|---|---|---|---|---|"]
        peer_seconds = None
        if "peer" in data:
            runs = data["peer"]["figures"]
            peer_seconds = statistics.median(r["seconds"] for r in runs)
            accuracy = _spread([r["accuracy"] for r in runs], ".2%")
            seconds = _spread([r["seconds"] for r in runs], ".0f")
            lines.append(f"| peer: Kaggle tutorial recipe, plain Keras | {accuracy} | {seconds} | 1.00x | 1 x 30 ep "
                         f"| (reference) | | {data['peer']['date']} |")
        for row in TARGETS:
            if row in data:
                line, verdict = _row_line(row, data[row], peer_seconds)
                lines.append(line)
                if row == "demo":
                    cells = [c.strip() for c in line.split("|")[1:-1]]
                    demo.append(f"| {CLASS_TITLES[cls]} | {layout_text(data[row]['figures'])} | {cells[1]} | "
                                f"{cv_text(data[row]['figures'][-1])} | {cells[2]} s | {cells[4]} | {cells[5]} | "
                                f"{verdict} | {cells[7]} |")
            elif cls in TARGETS[row].get("classes", (cls,)):
                lines.append(f"| `{row}` | not measured yet | | | | | | |")
        if "throughput" in data:
            lines += ["", "| training throughput, strong net | plain Keras `model.fit`, float32 (img/s) | "
                      "project trainer (img/s) | ratio | target | pass | measured |", "|---|---|---|---|---|---|---|"]
            figures = data["throughput"]["figures"]
            for batch, pair in ((b, p) for b, p in figures.items() if b != "rates"):
                ratio = statistics.median(pair["project"]) / statistics.median(pair["plain"])
                goal = THROUGHPUT_TARGET[cls] if batch == "64" else None
                plain, project = _spread(pair["plain"], ",.0f"), _spread(pair["project"], ",.0f")
                wanted, verdict = (f">= {goal}x", "PASS" if ratio >= goal else "FAIL") if goal else ("", "")
                lines.append(f"| batch {batch} | {plain} | {project} | {ratio:.2f}x | {wanted} | {verdict} | "
                             f"{data['throughput']['date']} |")
            if "rates" in figures:
                lines += render_rates(figures, cls)
        if "inference" in data:
            inf = data["inference"]["figures"]
            lines += ["", f"Inference: the `quick` ensemble ({inf['members']} members) predicts {inf['rows']:,} images "
                      f"at {inf['images_per_second']:,.0f} images/s ({inf['seconds']:.1f} s, all members)."]
        lines += render_recipes(data, cls) + render_ablation(data.get("ablation"))
        lines.append("")
        recipe_header += [f"{CLASS_TITLES[cls]}: accuracy (test), wall time"]
        for recipe, cells in recipes.items():
            figures = data[recipe]["figures"] if recipe in data else None
            cells.append(f"{figures['accuracy']:.2%}, {figures['seconds']:.0f} s ({data[recipe]['date']})" if figures
                         else "not measured yet")
    recipe_table = ["| " + " | ".join(recipe_header) + " |", "|---" * len(recipe_header) + "|",
                    *("| " + " | ".join(cells) + " |" for cells in recipes.values())]
    curve, curve_table = render_curve(stored)
    first_class = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    lines[first_class:first_class] = curve  # the curve first: it is what a user's machine buys
    lines += ["## GPU", "", "Not measured yet: no GPU has been lent while the GPU path was built (one member per "
              "GPU, mixed_float16, the T4 x2 kernel). The device name, the strong net's training img/s in "
              "mixed_float16 and float32, the time per member, the members' test accuracy and `full`'s projected "
              "wall time on that GPU and on Kaggle's T4 x2 belong here once measured; `tests/test_gpu.py` runs "
              "wherever a GPU is visible.", ""]
    return "\n".join(lines), {"demo": demo, "recipes": recipe_table, "curve": curve_table,
                              "speeds": render_speeds(stored)}


def render_recipes(data: dict, cls: str) -> list[str]:
    """The tutorial recipes against their authors' figures, with this pipeline's own configs below them."""
    lines = ["", f"### The tutorial recipes ({CLASS_TITLES[cls]})", "",
             "Each recipe of `configs/recipes/` trained once by `digits train --config recipes/<name>` on MNIST's "
             "official split (60,000 / 10,000, the split the authors used unless the note says otherwise), with its "
             "own holdout fraction, optimizer, schedule, batch size and epochs; the author's figure is from the "
             "config's first line. Below them, this pipeline's own configs on the same data (table above).", "",
             "| config | params | author's accuracy | accuracy here (test) | difference | wall time (s) | "
             f"within {RECIPE_TOLERANCE * 100:.1f} points? | measured |", "|---|---|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        if recipe not in data:
            lines.append(f"| `{recipe}` | not measured yet | | | | | | |")
            continue
        run = data[recipe]["figures"]
        difference = run["accuracy"] - run["reported"]
        close = abs(difference) <= RECIPE_TOLERANCE + 1e-9
        note = RECIPE_NOTES.get(recipe, "" if close else "not explained yet")
        verdict = ("yes" if close else "no") + (f": {note}" if note else "")
        lines.append(f"| `{recipe}` | {run['params']:,} | {run['reported']:.2%} | {run['accuracy']:.2%} | "
                     f"{difference * 100:+.2f} | {run['seconds']:.0f} | {verdict} | {data[recipe]['date']} |")
    own = {"peer": "peer: the Kaggle recipe in plain Keras", "fast": "`fast`", "quick": "`quick` (10 min budget)",
           "strong": "`strong`"}
    for row, label in own.items():
        if row in data:
            figures = data[row]["figures"]
            accuracy = statistics.median(r["accuracy"] for r in figures)
            seconds = statistics.median(r["seconds"] for r in figures)
            lines.append(f"| {label} | | | {accuracy:.2%} | | {seconds:.0f} | | {data[row]['date']} |")
    return lines


def render_ablation(entry: dict | None) -> list[str]:
    """What each step of the pipeline's recipe adds: test accuracy and the seconds it costs, cumulatively."""
    from digits.config import TrainConfig

    if not entry:
        return ["", "Ablation: not measured yet (`make bench ONLY=ablation`)."]
    steps, tta = entry["figures"], entry["figures"]["test-time augmentation"]
    plateau = steps["plateau, augmentation"]
    members = len(tta["tta"])
    extra = (tta["tta_seconds"] - tta["plain_seconds"]) / members  # test-time augmentation's seconds per member
    first = steps["constant, no augmentation"]
    rows = [(f"one `{first['architecture']}` member, {first['epochs'][0]} epochs, constant rate, no augmentation",
             first["accuracy"], first["member_seconds"][0]),
            ("+ augmentation (rotation, zoom, shift)", steps["constant, augmentation"]["accuracy"],
             steps["constant, augmentation"]["member_seconds"][0]),
            ("+ `ReduceLROnPlateau` (with its 1-epoch warm-up)", tta["plain"][0], plateau["member_seconds"][0]),
            ("+ test-time augmentation (the image and four 1-pixel shifts)", tta["tta"][0],
             plateau["member_seconds"][0] + extra)]
    rows += [(f"+ member {k + 1} (ensemble of {k + 1}, test-time augmentation)", tta["tta"][k],
              sum(plateau["member_seconds"][: k + 1]) + (k + 1) * extra) for k in range(1, members)]
    rows.append((f"the same {members} members without test-time augmentation", tta["plain"][-1],
                 sum(plateau["member_seconds"])))
    lines = ["", "### Ablation: what each step of the recipe adds", "",
             f"`quick`'s recipe with no budget, built up one step at a time on MNIST's official split (single runs; "
             f"one test image is 0.01 points). Seconds are training plus prediction per member, summed; test-time "
             f"augmentation adds {extra:.1f} s a member to predict the {tta['rows']:,} test images five times. It is "
             f"{'on' if TrainConfig().tta else 'off'} by default (`tta`). Measured {entry['date']}.", "",
             "| step | accuracy (test) | gain (points) | seconds | added seconds |", "|---|---|---|---|---|"]
    previous = None
    for label, accuracy, seconds in rows:
        if previous is None or label.startswith("the same"):
            gain, added = "", ""
        else:
            gain, added = f"{(accuracy - previous[0]) * 100:+.2f}", f"{seconds - previous[1]:+.0f}"
        lines.append(f"| {label} | {accuracy:.2%} | {gain} | {seconds:.0f} | {added} |")
        if not label.startswith("the same"):
            previous = (accuracy, seconds)
    return lines


def pages(docs: Path = DOCS, readme: Path = README) -> list[Path]:
    """The pages that hold rendered blocks: README.md and every docs/*.md but BENCHMARKS.md (rendered whole)."""
    return [readme, *(p for p in sorted(docs.glob("*.md")) if p.name != REPORT.name)]


def fill_blocks(text: str, blocks: dict[str, list[str]], where: str = "page") -> str:
    """`text` with each `<!-- bench:NAME -->` block replaced by its rendered lines; an unknown NAME, or a marker
    without its pair, is an error naming it."""
    markers, found = Counter(MARKER.findall(text)), Counter(name for name, _ in BLOCK.findall(text))
    unpaired = sorted(name for name in markers if markers[name] != 2 * found[name])
    if unpaired:
        raise ValueError(f"{where}: bench marker without its pair: {unpaired}")
    unknown = sorted(set(found) - set(blocks))
    if unknown:
        raise ValueError(f"{where}: no renderer for bench block(s) {unknown} (known: {', '.join(blocks)})")
    return BLOCK.sub(lambda m: f"<!-- bench:{m['name']} -->\n" + "".join(f"{line}\n" for line in blocks[m['name']])
                     + f"<!-- /bench:{m['name']} -->", text)


def rendered_pages(stored: dict, docs: Path = DOCS, readme: Path = README) -> dict[Path, str]:
    """What BENCHMARKS.md and every page with blocks should hold, rendered from `stored` (nothing written)."""
    text, blocks = render(stored)
    found = {docs / REPORT.name: text}
    for page in pages(docs, readme):
        found[page] = fill_blocks(page.read_text(), blocks, str(page))
    return found


def write_blocks(blocks: dict[str, list[str]], targets: list[Path] | None = None):
    """Replace each block between `<!-- bench:NAME -->` markers in README.md and docs/*.md (or `targets`)."""
    for page in pages() if targets is None else targets:
        text = page.read_text()
        filled = fill_blocks(text, blocks, str(page))
        if filled != text:
            atomic.write_text(page, filled)


def write_readme_blocks(blocks: dict[str, list[str]], readme: Path | None = None):
    """`make bench`'s call: the blocks of every page (README.md and docs/*.md), or of `readme` alone."""
    write_blocks(blocks, None if readme is None else [readme])


def load_stored(results: Path = RESULTS) -> dict:
    """Every CPU class's stored rows (docs/bench/<class>.json), in CLASS_TITLES order."""
    return {cls: json.loads((results / f"{cls}.json").read_text()) for cls in CLASS_TITLES
            if (results / f"{cls}.json").is_file()}


def render_speeds(stored: dict) -> list[str]:
    """The planner's own timing of each candidate net (training img/s, one member on every core), per CPU class
    and machine, over the budget curve's points (a net a short budget did not time is left out of that point)."""
    nets = list(plan_table.ACCURACY)
    lines = ["| CPU | " + " | ".join(f"`{net}` (img/s)" for net in nets) + " | measured |",
             "|---" * (len(nets) + 2) + "|"]
    for cls in CLASS_TITLES:
        by_machine = {}
        for run in stored.get(cls, {}).get("curve", {}).get("figures", []):
            by_machine.setdefault(run["machine"], []).append(run)
        for machine, points in by_machine.items():
            cells = []
            for net in nets:
                speeds = [s for s in ((p.get("plan") or {}).get("speeds", {}).get(net, {}).get(
                    "train_images_per_second") or (p.get("strong_images_per_second") if net == "strong" else None)
                    for p in points) if s]
                cells.append(_spread(speeds, ",.0f") if speeds else "not timed")
            dates = sorted({p["date"] for p in points})
            lines.append(f"| {CLASS_TITLES[cls]} | " + " | ".join(cells) + f" | {', '.join(dates)}, {machine} |")
    return lines


def _best_recipe(data: dict, seconds: float) -> tuple[str, float] | None:
    """The most accurate tutorial recipe (or the plain-Keras peer) whose measured wall time fits `seconds`."""
    fitting = [(f"`{r}`", data[r]["figures"]["accuracy"]) for r in RECIPES
               if r in data and data[r]["figures"]["seconds"] <= seconds]
    if "peer" in data:
        fitting += [("peer (Kaggle recipe, plain Keras)", run["accuracy"]) for run in data["peer"]["figures"]
                    if run["seconds"] <= seconds]
    return max(fitting, key=lambda item: item[1]) if fitting else None


def curve_points(stored: dict) -> list[dict]:
    """Each class's budget points with what they stand for, the best recipe in the same time, and a verdict."""
    points = []
    for cls in CLASS_TITLES:
        data = stored.get(cls, {})
        for run in data.get("curve", {}).get("figures", []):
            seconds = budget_seconds(run["budget"])
            plan = run.get("plan") or {}
            strong = (plan.get("speeds", {}).get("strong", {}).get("train_images_per_second")
                      or run.get("strong_images_per_second"))
            recipe = _best_recipe(data, seconds)
            target = CURVE_TARGETS.get((cls, run["budget"]))
            ok = (recipe is None or run["accuracy"] > recipe[1]) and (target is None or run["accuracy"] >= target)
            points.append({"class": cls, "run": run, "plan": plan, "strong": strong, "recipe": recipe,
                           "target": target, "pass": ok, "measured": f"{run['date']}, {run['machine']}",
                           "stands_for": seconds * strong / SLOW_LAPTOP / 60 if strong else None})
    return points


def _plan_text(plan: dict, trained=()) -> str:
    """The plan, and the epochs its members trained where they differ (a budget fills or cuts them)."""
    if not plan:
        return ""
    at_once = f", {plan['jobs']} at once" if plan.get("jobs", 1) > 1 else ""
    ran = sorted(set(trained))
    ran = f" (trained {ran[0]}{f'-{ran[-1]}' if len(ran) > 1 else ''})" if ran and ran != [plan["epochs"]] else ""
    return f"{plan['members']} x {plan['epochs']} ep{ran} of {plan['architecture']}{at_once}"


def cv_text(run: dict) -> str:
    """A run's CV with its rows and standard error; a shared holdout's accuracy, so labelled; '' if not recorded."""
    cv = run.get("cv")
    if not cv:
        return f"holdout {run['holdout']:.2%}" if run.get("holdout") else ""
    kind = "" if cv["kind"] == "out-of-fold" else "holdout "
    return f"{kind}{cv['accuracy']:.2%} ± {cv['standard_error']:.2%} ({cv['rows']:,} rows)"


def cv_honest(run: dict, test_rows: int = 28_000) -> str:
    """Whether an out-of-fold CV is within 2 standard errors of the mean member's test score ('' if not measured)."""
    cv, member = run.get("cv"), run.get("member_accuracy")
    if not cv or cv["kind"] != "out-of-fold" or member is None:
        return ""
    error = (cv["standard_error"] ** 2 + member * (1 - member) / test_rows) ** 0.5
    return f"{'yes' if abs(cv['accuracy'] - member) <= 2 * error else 'NO'} ({cv['accuracy'] - member:+.2%})"


def render_curve(stored: dict) -> tuple[list[str], list[str]]:
    """BENCHMARKS.md's curve section and README's short table ("What to expect on your machine")."""
    points = curve_points(stored)
    if not points:
        return ["## Accuracy for a time budget", "", "Not measured yet (`make bench ONLY=curve`).", ""], []
    lines = ["## Accuracy for a time budget", "",
             "`digits train --config quick --budget B` (the planner chooses net, members, epochs and members at "
             "once) on the Kaggle layout (42,000 / 28,000), scored on the 28,000 held-back answers; wall time from "
             "starting `digits train` to the validated submission. What a budget buys depends on budget x speed, so "
             f"each point also says how many minutes it stands for on a slow AVX2 laptop (the strong net at "
             f"{SLOW_LAPTOP} img/s, measured on a real 2-core Zen 3 EPYC). The recipe beside each point is the most "
             "accurate tutorial recipe whose wall time fits the budget, from the recipe table of the same class below "
             "(MNIST's official split, 55,200 training rows, measured on the date and machine that table names). "
             "CV is the run's out-of-fold accuracy over the labelled rows its members held out, ± its standard error: "
             "it estimates one member, so it stands beside the mean member's test accuracy, and it is honest if the "
             "two differ by at most 2 standard errors of their difference.",
             "", "![accuracy against budget](images/budget_curve.png)", "",
             "| CPU | budget | layout | strong net measured | stands for (slow laptop) | plan | predicted | "
             "accuracy (test) | CV | mean member (test) | CV honest | wall time (s) | best recipe in that time | "
             "target | pass | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    readme = ["| CPU | budget | layout | stands for on a slow AVX2 laptop | plan | accuracy (test) | CV | best "
              "tutorial recipe in that time |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        run, plan, recipe = p["run"], p["plan"], p["recipe"]
        recipe_text = f"{recipe[0]}: {recipe[1]:.2%}" if recipe else "none fits"
        wanted = ", ".join(filter(None, [f">= {p['target']:.2%}" if p["target"] else "",
                                         "above the recipe" if recipe else ""]))
        stands = f"~{p['stands_for']:.1f} min" if p["stands_for"] else ""
        strong = f"{p['strong']:,.0f} img/s" if p["strong"] else ""
        predicted = f"{plan['predicted_accuracy']:.2%}" if plan.get("predicted_accuracy") else ""
        planned = _plan_text(plan, run.get("epochs", ()))
        layout, cv = layout_text([run]), cv_text(run)
        member = f"{run['member_accuracy']:.2%}" if run.get("member_accuracy") else ""
        lines.append(f"| {CLASS_TITLES[p['class']]} | {run['budget']} | {layout} | {strong} | {stands} | {planned} | "
                     f"{predicted} | {run['accuracy']:.2%} | {cv} | {member} | {cv_honest(run)} | "
                     f"{run['seconds']:.0f} | {recipe_text} | {wanted} | {'PASS' if p['pass'] else 'FAIL'} | "
                     f"{p['measured']} |")
        readme.append(f"| {CLASS_TITLES[p['class']]} | {run['budget']} | {layout} | {stands} | {planned} | "
                      f"{run['accuracy']:.2%} | {cv} | {recipe_text} |")
    return lines + [""], readme


def plot_curve(stored: dict, path: Path):
    """docs/images/budget_curve.png: test accuracy against budget per class, the recipes' points beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve_points(stored)
    if not points:
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"bf16": "tab:blue", "avx2": "tab:orange", "avx2-native": "tab:red"}
    for cls, colour in colours.items():
        mine = [p for p in points if p["class"] == cls]
        if mine:
            ax.plot([budget_seconds(p["run"]["budget"]) / 60 for p in mine],
                    [100 * p["run"]["accuracy"] for p in mine], "o-", color=colour,
                    label=f"quick with a budget: {CLASS_TITLES[cls]}")
        data = stored.get(cls, {})
        recipes = [(data[r]["figures"]["seconds"] / 60, 100 * data[r]["figures"]["accuracy"]) for r in RECIPES
                   if r in data]
        if recipes:
            ax.plot([m for m, _ in recipes], [a for _, a in recipes], "x", color=colour, alpha=0.7,
                    label=f"tutorial recipes: {CLASS_TITLES[cls]}")
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 4, 9, 20])
    ax.set_xticklabels(["1", "2", "4", "9", "20"])
    ax.set_xlabel("minutes (budget; wall time for the recipes)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(bottom=max(97.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> list[Path]:
    """`python -m benchmarks.render`: rewrite BENCHMARKS.md and every page's blocks from docs/bench/ alone."""
    changed = []
    for path, text in rendered_pages(load_stored()).items():
        if not path.is_file() or path.read_text() != text:
            atomic.write_text(path, text)
            changed.append(path)
    print("\n".join(f"rewrote {path}" for path in changed) or "every rendered page is up to date")
    return changed


if __name__ == "__main__":
    main()
