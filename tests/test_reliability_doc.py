"""docs/reliability.md stays true: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_the_reliability_page_exists():
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", page)
    assert len(named) > 20
    for path, test in named:
        file = ROOT / path
        assert file.exists(), path
        if test:
            functions = {n.name for n in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                         if isinstance(n, ast.FunctionDef)}
            assert test in functions, f"{path}::{test} is named in docs/reliability.md"
