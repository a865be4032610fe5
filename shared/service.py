"""One bootstrap for every service: settings → logging → tracing → broker with middlewares
→ Postgres pool and migrations → streams → the service's handlers → HTTP health,
readiness and Prometheus metrics.

A service module provides a ``ServiceSpec`` and calls ``run(spec)`` from its ``__main__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsBroker, NatsRouter, NatsUserPassword
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, make_asgi_app

from shared.bus import DeadLetterMiddleware, consume, ensure_streams
from shared.db import Connection, claim, create_pool, migrate, unit_of_work
from shared.events import Event
from shared.logs import setup_logging
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.subjects import Subjects
from shared.telemetry import setup_tracing

log = structlog.get_logger(__name__)
E = TypeVar("E", bound=Event)


@dataclass
class Runtime:
    """What handlers need at run time. ``pool`` and ``outbox`` exist once the service started."""

    name: str
    settings: Settings
    broker: NatsBroker
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    _pool: asyncpg.Pool | None = None
    _outbox: OutboxRelay | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _started_hooks: list[Callable[[Runtime], Awaitable[None]]] = field(default_factory=list)

    def on_startup(self, hook: Callable[[Runtime], Awaitable[None]]) -> None:
        """Run ``hook`` once the pool, migrations and streams are ready, before any message is taken."""
        self._started_hooks.append(hook)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task for the life of the service (cancelled at shutdown)."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name} has no database pool yet (not started)")
        return self._pool

    @property
    def outbox(self) -> OutboxRelay:
        if self._outbox is None:
            raise RuntimeError(f"{self.name} has no outbox yet (not started)")
        return self._outbox

    @property
    def subjects(self) -> Subjects:
        return self.settings.subjects

    def consume_once(
        self,
        router: NatsRouter,
        subject: str,
        event_type: type[E],
        apply: Callable[[Connection, E], Awaitable[None]],
        *,
        after_commit: Callable[[E], None] | None = None,
    ) -> None:
        """Consume ``subject`` durably and apply each event exactly once: ``apply``'s writes and
        the inbox row for the event's id commit in one transaction, so a redelivery is a no-op.
        ``after_commit`` runs once those writes are visible to others."""

        async def handler(event: E) -> None:
            async with unit_of_work(self.pool) as conn:
                applied = await claim(conn, event.event_id, subject)
                if applied:
                    await apply(conn, event)
            if applied and after_commit is not None:
                after_commit(event)

        consume(router, self.settings, self.name, subject, event_type, handler)


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # also the Postgres schema
    migrations: Path
    register: Callable[[NatsRouter, Runtime], None]
    """Adds the service's subscribers to the router; called once, at build time."""


def build_broker(
    settings: Settings, name: str, tracer_provider: TracerProvider, registry: CollectorRegistry
) -> NatsBroker:
    return NatsBroker(
        settings.nats_url,
        security=(NatsUserPassword(settings.nats_user, settings.nats_password or "") if settings.nats_user else None),
        name=f"routewise-{name}",
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracer_provider),
            NatsPrometheusMiddleware(registry=registry, app_name=f"routewise-{name}"),
            DeadLetterMiddleware.configured(settings, name),
        ],
        logger=logging.getLogger(f"routewise.{name}.faststream"),
        graceful_timeout=10.0,
    )


def build_app(spec: ServiceSpec, settings: Settings | None = None) -> tuple[AsgiFastStream, Runtime]:
    settings = settings or Settings()
    if not settings.database_url:
        raise SystemExit(f"ROUTEWISE_DATABASE_URL is not set: {spec.name} needs its own Postgres role's DSN")
    setup_logging(spec.name, settings.log_level)
    tracer_provider = setup_tracing(f"routewise-{spec.name}")
    registry = CollectorRegistry()
    broker = build_broker(settings, spec.name, tracer_provider, registry)
    rt = Runtime(spec.name, settings, broker, tracer_provider, registry)

    router = NatsRouter()
    spec.register(router, rt)
    broker.include_router(router)

    async def on_startup() -> None:
        rt._pool = await create_pool(settings.database_url or "", spec.name, max_size=settings.db_pool_size)
        await migrate(rt._pool, spec.name, spec.migrations)
        client = await broker.connect()
        await ensure_streams(client.jetstream(), settings)
        rt._outbox = OutboxRelay(rt._pool, broker, settings)
        for hook in rt._started_hooks:  # before any subscriber takes a message
            await hook(rt)

    async def after_startup() -> None:
        rt.outbox.start()
        log.info("service ready", nats_url=settings.nats_url, http_port=settings.http_port)

    async def on_shutdown() -> None:
        await rt.cancel_tasks()
        if rt._outbox:
            await rt._outbox.stop()

    async def after_shutdown() -> None:
        if rt._pool:
            await rt._pool.close()
        tracer_provider.shutdown()

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return _json(200, {"status": "alive", "service": spec.name})

    @get
    async def readyz(scope: Any) -> AsgiResponse:
        checks: dict[str, str] = {}
        checks["nats"] = "ok" if await broker.ping(timeout=1.0) else "down"
        try:
            if rt._pool is None:
                raise RuntimeError("not started")
            async with rt._pool.acquire(timeout=1.0) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values()) and broker.running
        return _json(200 if ready else 503, {"ready": ready, "service": spec.name, "checks": checks})

    app = AsgiFastStream(
        broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app(registry))],
        on_startup=[on_startup],
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        after_shutdown=[after_shutdown],
        asyncapi_path="/docs/asyncapi",
        logger=logging.getLogger(f"routewise.{spec.name}"),
    )
    return app, rt


def _json(status: int, body: dict[str, Any]) -> AsgiResponse:
    return AsgiResponse(json.dumps(body).encode(), status_code=status, headers={"content-type": "application/json"})


def run(spec: ServiceSpec) -> None:
    """Entry point of ``python -m services.<name>``."""
    settings = Settings()
    app, _ = build_app(spec, settings)
    # log_config=None: uvicorn's loggers go through the same JSON renderer as everything else
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "access_log": "false",
        "log_config": None,
    }
    asyncio.run(app.run(run_extra_options=options))
