"""`make lint` checks what a contributor's `ruff check .` checks, so the two cannot disagree."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_make_lint_runs_ruff_on_the_whole_project() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "Makefile has no lint target"
    ruff = [line.strip() for line in recipe.group(1).splitlines() if "ruff check" in line]
    # `.`: every file ruff finds from the root (notebooks/*.ipynb, benchmarks/ too), less what
    # pyproject's [tool.ruff] and .gitignore exclude, exactly as `ruff check .` from the root
    assert ruff == ["$(BIN)/ruff check ."], ruff
