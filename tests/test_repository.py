"""The repository itself: no data files in git, the MNIST cache outside it, `make help` from the Makefile."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from digits import mnist


def _git_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.skipif(not (PROJECT_ROOT / ".git").exists(), reason="a copy of the work tree, not a git checkout")
def test_no_data_files_in_git():
    names = set(mnist.IDX_SHA256)
    data = [f for f in _git_files() if Path(f).name in names or f.startswith(".cache/")
            or (PROJECT_ROOT / f).is_file() and (PROJECT_ROOT / f).stat().st_size > 2_000_000]
    assert not data, f"data files tracked by git: {data}"


def test_the_mnist_cache_lives_outside_the_repository(mnist_idx, tmp_path):
    assert not mnist_idx.resolve().is_relative_to(PROJECT_ROOT.resolve()), mnist_idx
    assert mnist.default_cache_dir({}) == Path.home() / ".cache" / "digits" / "mnist"
    assert mnist.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/digits/mnist")
    assert mnist.default_cache_dir({"XDG_CACHE_HOME": "/x", "DIGITS_MNIST_CACHE": str(tmp_path)}) == tmp_path


def test_make_help_lists_every_target():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, re.M | re.S).group(1).replace("\\", " ").split()
    out = subprocess.run(["make", "-s", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[1]: line for line in out.splitlines() if line.startswith("make ")}
    assert set(listed) == set(phony), set(phony) ^ set(listed)
    assert all(len(line.split(None, 2)) == 3 for line in listed.values()), out  # each with its description
