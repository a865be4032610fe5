"""The whole system inside one process: every service's table on its own broker connection to one
real NATS, each on its own Postgres role and schema. What most end-to-end tests run: the same
handlers, subscribers, inbox, outbox and dead letters as the service processes, without the
seconds a process takes to start."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from shared.service import Runtime, Service, build_runtime
from shared.settings import Settings
from shared.subjects import SERVICES


def service(name: str) -> Service[Any]:
    """A service's table (``services.<name>.app.SERVICE``)."""
    found: Service[Any] = importlib.import_module(f"services.{name}.app").SERVICE
    return found


@dataclass
class System:
    settings: Settings
    runtimes: dict[str, Runtime]

    def deps(self, name: str) -> Any:
        """A running service's dependencies (its pool, price book, snapshots, ...)."""
        return self.runtimes[name].deps


@asynccontextmanager
async def in_process(
    settings: Settings,
    dsns: dict[str, str],
    services: Iterable[str] = SERVICES,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[System]:
    """Start ``services`` (each with its own DSN from ``dsns``) in this process; stop them after."""
    provider = tracer_provider or TracerProvider()
    system = System(settings, {})
    try:
        for name in services:
            own = settings.model_copy(update={"database_url": dsns[name]})
            rt = build_runtime(service(name), own, tracer_provider=provider)
            system.runtimes[name] = rt
            await rt.start()
        yield system
    finally:
        for rt in reversed(list(system.runtimes.values())):
            await rt.stop_background()
            await rt.broker.stop()
            if rt._pool is not None:
                await rt._pool.close()
