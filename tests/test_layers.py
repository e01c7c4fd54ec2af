"""Dependencies point one way: api → shared ← worker; sandbox, trainer and shared import neither edge."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

FORBIDDEN = {
    "shared": {"api", "worker", "cli", "sandbox"},
    "worker": {"api", "cli", "sandbox"},
    "api": {"worker", "cli", "sandbox"},
    "sandbox": {"api", "worker", "cli", "trainer"},
    # The trainer is the sandbox's HTTP layer with a real engine: it may import sandbox and shared.
    "trainer": {"api", "worker", "cli"},
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_package_imports_against_the_dependency_direction() -> None:
    violations = [
        f"{path.relative_to(REPO)} imports {sorted(_imported_roots(path) & banned)}"
        for package, banned in FORBIDDEN.items()
        for path in (REPO / package).rglob("*.py")
        if _imported_roots(path) & banned
    ]
    assert violations == []


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = [
        str(path.relative_to(REPO))
        for package in FORBIDDEN
        for path in (REPO / package).rglob("*.py")
        if "os.environ" in path.read_text() or "os.getenv" in path.read_text()
    ]
    assert readers == ["shared/config.py"]
