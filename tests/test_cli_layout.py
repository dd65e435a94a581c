"""The command line stands apart: the Celery runtime never imports it, its modules import
each other without a circle, and it starts without loading Celery, redis or matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

WORKER = Path(__file__).resolve().parent.parent / "worker"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_celery_runtime_never_imports_the_command_line():
    for path in WORKER.glob("*.py"):
        wrong = {m for m in imported_modules(path)
                 if m == "worker.cli" or m.startswith("worker.cli.")}
        assert not wrong, f"{path.name} imports {sorted(wrong)}"


def test_command_line_modules_import_each_other_without_a_circle():
    modules = {p.stem: p for p in (WORKER / "cli").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m.split(".")[2] for m in imported_modules(path)
                    if m.startswith("worker.cli.")}
             for name, path in modules.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {exc.args[1]}") from None
    assert set(order) == set(modules)
    assert all(m not in {"worker.cli", "worker"} for path in modules.values()
               for m in imported_modules(path)), "a command module imports the package itself"


def test_the_command_line_starts_without_celery_redis_or_matplotlib():
    code = ("import sys, worker.cli; "
            "print(sorted(m for m in ('celery', 'redis', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
