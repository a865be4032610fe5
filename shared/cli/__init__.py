"""The ``routewise`` command line: rich output for people, ``--json`` for scripts."""

from __future__ import annotations

from routewise.cli import (  # noqa: F401  (each module adds its commands to the app)
    budgets,
    bususers,
    core,
    costs,
    deadletters,
    dev,
    keys,
    metrics,
    models,
    performance,
    routing,
    streams,
)
from routewise.cli.common import app, err_console
from routewise.contracts.errors import RemoteError


def main() -> None:
    try:
        app()
    except RemoteError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"[bold red]error[/]: {exc.message}")
        raise SystemExit(1) from None


__all__ = ["app", "main"]
