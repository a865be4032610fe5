"""Boundaries of the design: services never import each other; shared never imports services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.subjects import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_and_shared(service: str) -> None:
    files = list((ROOT / "services" / service).rglob("*.py"))
    assert files
    for path in files:
        for module in imported_modules(path):
            if module.startswith("services."):
                assert module.split(".")[1] == service, f"{path.relative_to(ROOT)} imports {module}"


def test_shared_never_imports_a_service() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        offenders = [m for m in imported_modules(path) if m == "services" or m.startswith("services.")]
        assert not offenders, f"{path.relative_to(ROOT)} imports {offenders}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_its_own_migrations_and_entry_point(service: str) -> None:
    folder = ROOT / "services" / service
    assert (folder / "__main__.py").is_file()
    assert sorted(p.name for p in (folder / "migrations").glob("*.sql"))[0].startswith("0001_")
