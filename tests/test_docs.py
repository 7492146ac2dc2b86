"""The docs (README.md and docs/*.md): figures rendered from docs/bench, links that lead somewhere, and `make` and
`digits` commands that exist."""

import re
from pathlib import Path

import pytest
from benchmarks import render

from conftest import PROJECT_ROOT
from digits import cli

DOCS = PROJECT_ROOT / "docs"
PAGES = [PROJECT_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# the pages whose commands must be true today (PERFORMANCE.md is a dated record; BENCHMARKS.md is rendered)
USER_PAGES = [PROJECT_ROOT / "README.md", DOCS / "guide.md", DOCS / "kaggle.md", DOCS / "how-it-works.md"]
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as dashes, '-N' on repeats."""
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if not count else f"{slug}-{count}")
    return found


def test_every_rendered_block_matches_what_docs_bench_renders():
    expected = render.rendered_pages(render.load_stored())
    assert PROJECT_ROOT / "README.md" in expected and DOCS / "BENCHMARKS.md" in expected
    blocks = {path: len(render.BLOCK.findall(text)) for path, text in expected.items()}
    assert blocks[PROJECT_ROOT / "README.md"] >= 2, blocks  # the demo and the budget curve, at least
    stale = [str(path.relative_to(PROJECT_ROOT)) for path, text in expected.items() if path.read_text() != text]
    assert not stale, f"{stale} differ from docs/bench: run `.venv/bin/python -m benchmarks.render`"


def test_a_block_is_rendered_wherever_it_is_placed_and_a_stray_marker_is_an_error():
    blocks = {"demo": ["| a |", "|---|", "| 1 |"]}
    page = ("intro\n<!-- bench:demo -->\nstale\n<!-- /bench:demo -->\nmiddle\n"
            "<!-- bench:demo -->\n<!-- /bench:demo -->\n")
    assert render.fill_blocks(page, blocks) == (
        "intro\n<!-- bench:demo -->\n| a |\n|---|\n| 1 |\n<!-- /bench:demo -->\nmiddle\n"
        "<!-- bench:demo -->\n| a |\n|---|\n| 1 |\n<!-- /bench:demo -->\n")
    with pytest.raises(ValueError, match="no renderer for bench block"):
        render.fill_blocks("<!-- bench:nothing -->\n<!-- /bench:nothing -->\n", blocks)
    with pytest.raises(ValueError, match="without its pair"):
        render.fill_blocks("<!-- bench:demo -->\nno end\n", blocks)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no {found}")
        elif anchor and found.suffix == ".md" and anchor not in _anchors(found):
            broken.append(f"{target}: no heading #{anchor} in {found.name}")
    assert not broken, broken


def _make_vocabulary() -> tuple[set[str], set[str]]:
    """The Makefile's targets, and the variables it reads."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    variables = set(re.findall(r"\$\((?:origin )?([A-Z_]+)\)", makefile))
    variables |= set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    return targets, variables


def _commands(text: str) -> list[str]:
    """Inline code spans, and the lines of fenced code blocks without their `# comments`."""
    spans = [span.strip("`").replace("\n", " ") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    for block in FENCE.finditer(text):
        spans += [line.split(" # ")[0].split("  #")[0] for line in block.group(0).splitlines()[1:-1]]
    return spans


def _flags(parser) -> dict[str, set[str]]:
    """Each `digits` command's option strings."""
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return {name: {s for a in sub._actions for s in a.option_strings} for name, sub in commands.items()}


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_make_and_digits_command_in_the_docs_exists(page):
    targets, variables = _make_vocabulary()
    flags = _flags(cli.build_parser())
    wrong, seen = [], 0
    for span in _commands(page.read_text()):
        for words, settings in re.findall(r"\bmake ((?:[a-z][a-z-]*(?: |$))+)((?:[A-Z_]+=\S*\s*)*)", span):
            seen += 1
            wrong += [f"{span}: no target {w}" for w in words.split() if w not in targets]
            wrong += [f"{span}: no variable {v}" for v in re.findall(r"([A-Z_]+)=", settings) if v not in variables]
        for command, rest in re.findall(r"(?:^|[\s/])digits ([a-z][a-z-]*)((?: +\S+)*)", span):
            seen += 1
            if command not in flags:
                wrong.append(f"{span}: no command digits {command}")
                continue
            for flag in re.findall(r"(?:^|[\s\[])(--?[a-z][a-z-]*)", rest):
                if flag not in flags[command]:
                    wrong.append(f"{span}: digits {command} has no {flag}")
    assert seen, f"no commands found in {page.name}"
    assert not wrong, wrong


def test_how_it_works_names_every_module():
    text = (DOCS / "how-it-works.md").read_text()
    missing = [p.name for p in sorted((PROJECT_ROOT / "src" / "digits").glob("*.py")) if f"`{p.name}`" not in text]
    assert not missing, f"docs/how-it-works.md does not name {missing}"


def test_the_speeds_block_takes_each_net_from_the_planners_timings_per_machine():
    def point(date, machine, speeds, strong):
        plan = {"speeds": {net: {"train_images_per_second": s} for net, s in speeds.items()}}
        return {"date": date, "machine": machine, "plan": plan, "strong_images_per_second": strong}

    curve = [point("2026-12-05", "Xeon", {"kaggle-rmsprop": 1000.0, "lite": 500.0}, 200.0),
             point("2026-12-05", "Xeon", {"kaggle-rmsprop": 1200.0, "lite": 600.0, "strong": 250.0}, 240.0),
             point("2026-12-02", "EPYC", {"kaggle-rmsprop": 900.0}, None)]
    lines = render.render_speeds({"avx2": {"curve": {"figures": curve}}})
    header = [cell.strip(" `").removesuffix("` (img/s)") for cell in lines[0].split("|")[1:-1]]
    rows = [dict(zip(header, (cell.strip() for cell in line.split("|")[1:-1]), strict=True)) for line in lines[2:]]
    assert [row["measured"] for row in rows] == ["2026-12-05, Xeon", "2026-12-02, EPYC"]  # a row per machine
    assert rows[0]["kaggle-rmsprop"] == "1,100 (range 1,000-1,200, n=2)"
    assert rows[0]["lite"] == "550 (range 500-600, n=2)"
    assert rows[0]["strong"] == "225 (range 200-250, n=2)"  # timed by the plan, else the benchmark's own timing
    assert (rows[1]["kaggle-rmsprop"], rows[1]["lite"], rows[1]["strong"]) == ("900", "not timed", "not timed")


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_constant_or_variable_named_in_the_docs_is_in_the_code(page):
    """A page says a constant's name rather than its value; the name must still be there (or an environment
    variable the code reads)."""
    code = "\n".join(p.read_text() for folder in ("src/digits", "benchmarks", "tests") for p in
                     sorted((PROJECT_ROOT / folder).glob("*.py")))
    named = {m for span in INLINE_CODE.findall(FENCE.sub("", page.read_text()))
             for m in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", span)}
    missing = sorted(name for name in named if name not in code)
    assert not missing, f"{page.name} names {missing}, which the code does not"
