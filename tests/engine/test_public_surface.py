"""The engine's public surface: what users import, and what their type checkers see.

``durable_engine`` (its ``__all__``), ``durable_engine.postgres``, ``durable_engine.migrate``
and ``durable_engine.testing`` are public; every other module is a private ``_name``. The
documented examples must pass ``mypy --strict`` as users would write them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

import durable_engine

REPO = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = {"postgres", "migrate", "testing"}
TYPECHECK = REPO / "tests" / "typecheck" / "engine_usage.py"

#: mypy must report exactly this (a typed result assigned to the wrong type): proof that the
#: check runs strict and that typed results are not ``Any``
WRONG_ON_PURPOSE = """\
from durable_engine import OrchestrationContext

async def orchestration(ctx: OrchestrationContext) -> None:
    text = await ctx.schedule_activity("Count", result_type=str)
    count: int = text
"""


def fenced_python_after(markdown: Path, heading: str) -> str:
    """The first ```python block after ``heading`` in ``markdown``."""
    text = markdown.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no python block after {heading!r} in {markdown.name}"
    return match.group(1)


def test_documented_examples_and_typed_usage_pass_mypy_strict(tmp_path: Path) -> None:
    files = {
        "readme_example.py": fenced_python_after(REPO / "README.md", "## The engine in thirty lines"),
        "engine_md_example.py": fenced_python_after(REPO / "docs" / "engine.md", "## A runnable example"),
        "wrong_on_purpose.py": WRONG_ON_PURPOSE,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            TYPECHECK,
            *sorted(tmp_path.iterdir()),
        ],
        cwd=REPO,  # the project's mypy configuration and cache
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert "wrong_on_purpose.py:5: error: Incompatible types in assignment" in errors[0]
    assert 'expression has type "str", variable has type "int"' in errors[0]


def test_importing_the_engine_loads_no_driver_validator_or_test_framework() -> None:
    heavy = ("psycopg", "pydantic", "pytest", "durable_engine.testing")
    probe = f"import sys, durable_engine; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_all_is_the_whole_public_namespace() -> None:
    for name in durable_engine.__all__:
        assert getattr(durable_engine, name) is not None
    assert durable_engine.PostgresProvider.__name__ == "PostgresProvider"
    public = {
        name
        for name, value in vars(durable_engine).items()
        if not name.startswith("_")
        and name != "TYPE_CHECKING"
        and not (isinstance(value, types.ModuleType) and name in PUBLIC_MODULES)
    }
    assert public <= set(durable_engine.__all__), public - set(durable_engine.__all__)
    engine = REPO / "durable_engine"
    modules = [p.relative_to(engine) for p in engine.rglob("*.py") if p.name != "__init__.py"]
    not_private = [str(m) for m in modules if str(m) != "migrate.py" and not m.name.startswith("_")]
    assert modules and not_private == []


def _engine_imports(tree: ast.AST) -> list[str]:
    """Dotted names this module imports from ``durable_engine`` (``from durable_engine import x``
    counts as ``durable_engine.x``)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "durable_engine"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "durable_engine":
                found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def test_code_outside_the_engine_imports_only_its_public_paths() -> None:
    skip = {".venv", "node_modules", ".git", "durable_engine"}
    offenders = []
    for path in REPO.rglob("*.py"):
        if skip & set(path.relative_to(REPO).parts):
            continue
        for dotted in _engine_imports(ast.parse(path.read_text(), str(path))):
            parts = dotted.split(".")[1:]
            if any(part.startswith("_") for part in parts) or (
                len(parts) > 1 and parts[0] not in PUBLIC_MODULES
            ):
                offenders.append(f"{path.relative_to(REPO)}: {dotted}")
    assert offenders == []
