"""One bootstrap for every service: a service is a table, the runtime does the wiring.

A service declares, in its ``app.py``:

- ``events``: ``{CostRecorded: handlers.settle_cost, ...}``: each event applied exactly once.
  The runtime consumes the event's subject durably, validates the payload against the
  contract (a malformed message goes straight to the dead letter), opens a transaction,
  claims the event's id in the inbox and calls ``handler(event, uow, deps)``; events the
  handler publishes through ``uow`` go out by the outbox, woken after the commit.
  ``consumer(handler, inbox=False)`` hands the event to ``handler(event, deps)`` alone (for a
  handler that makes its own transactions, like the selector's decision).
- ``requests``: ``{"budget_reserve": handlers.reserve, ...}`` (a ``Subjects`` field): the
  runtime answers every request with ``handler(request, deps)``'s result, or an error reply.
- ``notices``: core-NATS notices without payload that run ``handler(deps)``.
- ``jobs``: ``every(seconds, handler)``: ``handler(deps)`` repeated for the life of the service
  (``until=``: until it has nothing left to do).
- ``deps``: an async factory that builds the service's dependencies once, at start-up.
- ``http``: ``http(deps)`` gives an ASGI app (FastAPI) for every HTTP path the runtime's own
  (``/healthz``, ``/readyz``, ``/metrics``, ``/docs/asyncapi``) do not serve, on the same server.

Handlers are plain module-level functions that know nothing of NATS or FastStream, so a test
imports and calls them. ``run(service)`` is the entry point of ``python -m routewise.services.<name>``;
``Runtime`` starts the same service inside another process (the in-process system of the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
import uvloop
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsRouter, NatsUserPassword
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, make_asgi_app
from pydantic import BaseModel

from routewise.contracts.events import Event, utcnow
from routewise.contracts.subjects import Subjects
from routewise.runtime import retention
from routewise.runtime.bus import (
    DeadLetterMiddleware,
    DeadLetters,
    Delivered,
    consume,
    consume_batches,
    event_context,
    reply,
)
from routewise.runtime.bus_users import as_service
from routewise.runtime.db import Connection, claim_many, create_pool, digest_of, migrate
from routewise.runtime.logs import setup_logging
from routewise.runtime.outbox import OutboxRelay, enqueue
from routewise.runtime.pull import PatientBroker
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams
from routewise.runtime.telemetry import setup_tracing

log = structlog.get_logger(__name__)
D = TypeVar("D", bound="Deps")


class UnitOfWork:
    """One transaction: its connection, the events it publishes (through the outbox, in the same
    transaction) and what must happen once it has committed."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.published = 0
        self._after_commit: list[Callable[[], None]] = []

    async def publish(self, subject: str, event: Event) -> None:
        """Publish ``event`` on ``subject`` if, and once, this transaction commits."""
        await enqueue(self.conn, subject, event)
        self.published += 1

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the transaction's writes are visible to others."""
        self._after_commit.append(action)

    def committed(self) -> None:
        """Every after-commit action, each on its own: one that fails is logged and the others run
        (the work is committed: failing the message now would only redeliver it for nothing)."""
        for action in self._after_commit:
            try:
                action()
            except Exception:
                log.exception("an after-commit action failed", action=getattr(action, "__qualname__", repr(action)))


@dataclass
class Deps:
    """What every handler may use. A service subclasses it with its long-lived objects (price
    book, snapshots, learner) and builds it once at start-up; a test builds it by hand."""

    pool: asyncpg.Pool
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    wake_outbox: Callable[[], None] = lambda: None
    count_conflict: Callable[[str], None] = lambda subject: None
    """Told of each conflicting duplicate (an event id applied before, with another payload)."""

    @property
    def subjects(self) -> Subjects:
        return self.settings.subjects

    async def claim(self, conn: Connection, event: Event) -> bool:
        """Claim ``event`` in the inbox (with its digest, so a conflicting duplicate is counted);
        False when it was applied before. Inside the transaction that applies it."""
        return bool(await self.claim_all(conn, [event]))

    async def claim_all(self, conn: Connection, events: Sequence[Event]) -> list[int]:
        """``claim`` for a batch, in one statement: the positions of the events applied now (not before)."""
        claims = [(e.event_id, self.subjects.of(type(e)), digest_of(e.model_dump_json().encode())) for e in events]
        return await claim_many(conn, claims, self.count_conflict)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """One connection, one transaction: commit on success, roll back on any error. After the
        commit the outbox is woken (when the work published) and the after-commit actions run."""
        async with self.pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn)
            yield uow
        if uow.published:
            self.wake_outbox()
        uow.committed()

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """A read-only, repeatable-read transaction: every figure read in it is from one moment."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn


EventHandler = Callable[[Any, UnitOfWork, Any], Awaitable[None]]
PlainEventHandler = Callable[[Any, Any], Awaitable[None]]
RequestHandler = Callable[[Any, Any], Awaitable[BaseModel]]
JobHandler = Callable[[Any], Awaitable[Any]]
AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]


async def apply_once(handler: EventHandler, event: Event, deps: Deps) -> bool:
    """An event applied exactly once: its id claimed in the inbox and ``handler(event, uow, deps)``
    in one transaction (what it publishes goes out, and its after-commit actions run, after the
    commit). False when the event was applied before. What the runtime does with every consumed
    event; a test calls it to apply an event as the service would."""
    return bool(await apply_batch(handler, [event], deps))


async def apply_batch(
    handler: EventHandler,
    events: Sequence[Event],
    deps: Deps,
    traces: Sequence[otel_context.Context] = (),
    order: Callable[[Any], Any] | None = None,
) -> int:
    """``apply_once`` for a batch, in one transaction: the ids claimed in one statement, then
    ``handler(event, uow, deps)`` for each event not applied before, in order (sorted by ``order``
    first, when given); all or nothing. Returns how many were applied. What a batch consumer does
    with each batch; ``traces``: each event's trace context (from its message), current while its
    handler runs, so that what it publishes continues the event's trace and not the batch's."""
    async with deps.transaction() as uow:
        fresh = await deps.claim_all(uow.conn, events)
        if order is not None:
            fresh.sort(key=lambda i: order(events[i]))
        for i in fresh:
            token = otel_context.attach(traces[i]) if traces else None
            try:
                with event_context(events[i]):
                    await handler(events[i], uow, deps)
            finally:
                if token is not None:
                    otel_context.detach(token)
    return len(fresh)


def one_worker(_: Settings) -> int:
    """One message at a time (a consumer's default)."""
    return 1


@dataclass(frozen=True)
class Consumer:
    """An event subscription's options beyond the handler (see ``consumer``)."""

    handler: EventHandler | PlainEventHandler
    inbox: bool = True
    workers: Callable[[Settings], int] = one_worker
    on_invalid: InvalidHandler | None = None
    batch: bool = False
    order: Callable[[Any], Any] | None = None


InvalidHandler = Callable[[bytes, str, Any], Awaitable[None]]


def consumer(
    handler: EventHandler | PlainEventHandler,
    *,
    inbox: bool = True,
    workers: Callable[[Settings], int] = one_worker,
    on_invalid: InvalidHandler | None = None,
    batch: bool = False,
    order: Callable[[Any], Any] | None = None,
) -> Consumer:
    """``inbox=False``: the handler gets ``(event, deps)`` and claims the event itself;
    ``workers``: how many events one replica handles at once (from the settings);
    ``on_invalid(raw, problem, deps)``: told of a payload that is not the contract before it is
    dead-lettered, to answer its sender; ``batch``: the events are applied a batch at a time
    (``apply_batch``: one inbox statement and one commit per batch), for bookkeeping handlers
    that neither wait on other services nor answer the sender; ``order``: a batch's events are
    applied sorted by this key (stably), which must name what the handler locks first (its model,
    its task), so every batch takes its locks in one order and two batches never deadlock."""
    if batch and (not inbox or on_invalid is not None or workers is not one_worker):
        raise ValueError("a batch consumer applies through the inbox, one batch at a time, and answers no sender")
    if order is not None and not batch:
        raise ValueError("only a batch consumer orders its events")
    return Consumer(handler, inbox, workers, on_invalid, batch, order)


@dataclass(frozen=True)
class Answer:
    handler: RequestHandler
    workers: Callable[[Settings], int] = lambda _: 1


def answer(handler: RequestHandler, *, workers: Callable[[Settings], int] = lambda _: 1) -> Answer:
    return Answer(handler, workers)


@dataclass(frozen=True)
class Job:
    """``run(deps)`` for the life of the service, ``interval(settings)`` seconds apart (sooner when
    ``wake(deps)`` is set). A failure is logged and the job runs again at its next turn. The
    retention prune every service runs starts 10 to 60 s after start-up (replicas apart), then
    every ``prune_interval``."""

    run: JobHandler
    interval: Callable[[Settings], float]
    wake: Callable[[Any], asyncio.Event] | None = None
    first_after: Callable[[Settings], float] | None = None
    """Seconds before the first run (default: one interval)."""
    until: Callable[[Any], bool] | None = None
    """``until(deps)`` true: the job has nothing left to do and ends (asked before each turn)."""

    @property
    def name(self) -> str:
        return self.run.__name__.replace("_", "-")


def every(
    seconds: float | Callable[[Settings], float],
    run: JobHandler,
    *,
    wake: Callable[[Any], asyncio.Event] | None = None,
    first_after: Callable[[Settings], float] | None = None,
    until: Callable[[Any], bool] | None = None,
) -> Job:
    interval = seconds if callable(seconds) else (lambda _: seconds)
    return Job(run, interval, wake, first_after, until)


@dataclass(frozen=True)
class Service(Generic[D]):
    name: str  # also the Postgres schema
    migrations: Path
    deps: Callable[[Runtime], Awaitable[D]]
    events: Mapping[type[Event], EventHandler | Consumer] = field(default_factory=dict)
    requests: Mapping[str, RequestHandler | Answer] = field(default_factory=dict)
    notices: Mapping[str, JobHandler] = field(default_factory=dict)
    jobs: Sequence[Job] = ()
    publishes: Sequence[type[Event]] = ()
    """Events the service publishes (documented in its AsyncAPI; its bus user may publish only these)."""
    asks: Sequence[str] = ()
    """The requests and notices it sends to other services (``Subjects`` attribute names): its bus
    user may send only these (``routewise.runtime.bus_users``)."""
    listens: Sequence[type[Event]] = ()
    """Events it subscribes to as they pass, outside JetStream (the gateway: the decisions it waits for)."""
    writes_kv: Sequence[str] = ()
    """The JetStream key-value buckets it writes (``Subjects`` attribute names)."""
    reads_kv: Sequence[str] = ()
    """The buckets it reads and watches (it may read no other stream's messages)."""
    retention: Mapping[str, str] = field(default_factory=dict)
    """Per-task working data past its use, ``{table: timestamp column}``: rows older than
    ``task_retention_days`` are pruned (with the inbox and outbox, every ``prune_interval``)."""
    http: Callable[[Any], AsgiApp] | None = None
    """``http(deps)``: the service's own HTTP API, served beside its health endpoints."""


def _first_parameter_type(handler: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(handler)
    first = next(iter(hints))
    kind = hints[first]
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        raise TypeError(f"{handler.__qualname__}: the first parameter must be a contract type, not {kind!r}")
    return kind


def _return_type(handler: Callable[..., Any]) -> type[BaseModel]:
    kind = typing.get_type_hints(handler).get("return")
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        raise TypeError(f"{handler.__qualname__} must declare the contract type it answers with")
    return kind


@dataclass
class Runtime:
    """One running service: its settings, broker, pool, outbox, dependencies and jobs."""

    service: Service[Any]
    settings: Settings
    broker: PatientBroker
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    letters: DeadLetters
    _pool: asyncpg.Pool | None = None
    _outbox: OutboxRelay | None = None
    _deps: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _http: AsgiApp | None = None
    stopping: bool = False
    """Set once the service is asked to stop: the bus closing then is expected."""
    bus_gone: bool = False
    """Set when the bus connection closed for good while the service ran: it exits non-zero."""

    def __post_init__(self) -> None:
        self._conflicts = Counter(
            "routewise_conflicting_duplicates_total",
            "Events whose id was applied before with another payload (not applied; logged)",
            ["subject"],
            registry=self.registry,
        )

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def subjects(self) -> Subjects:
        return self.settings.subjects

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name} has no database pool yet (not started)")
        return self._pool

    @property
    def deps(self) -> Any:
        if self._deps is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._deps

    @property
    def http_app(self) -> AsgiApp | None:
        """The service's own HTTP API (``Service.http``) once started; None for a service without one."""
        if self.service.http is None:
            return None
        if self._http is None:
            self._http = self.service.http(self.deps)
        return self._http

    def base_deps(self) -> dict[str, Any]:
        """The fields of ``Deps`` as this runtime fills them, for a service's factory."""
        outbox = self._outbox
        return {
            "pool": self.pool,
            "settings": self.settings,
            "wake_outbox": outbox.poke if outbox else lambda: None,
            "count_conflict": lambda subject: self._conflicts.labels(subject).inc(),
        }

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task for the life of the service (cancelled at shutdown)."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    # --- wiring ---------------------------------------------------------------------------

    def router(self) -> NatsRouter:
        """The service's table as typed FastStream subscribers (and publishers, for AsyncAPI)."""
        router = NatsRouter()
        subjects, settings, name = self.subjects, self.settings, self.name
        for event_type, entry in self.service.events.items():
            spec = entry if isinstance(entry, Consumer) else Consumer(entry)
            subject = subjects.of(event_type)
            if spec.batch:
                durable_name = consume_batches(
                    router, settings, name, subject, event_type, self._batch_applier(spec), self.letters
                )
                self.broker.batches[durable_name] = settings.batch_linger
                continue
            consume(
                router,
                settings,
                name,
                subject,
                event_type,
                self._applier(spec),
                workers=spec.workers(settings),
                on_invalid=self._told_invalid(spec.on_invalid) if spec.on_invalid else None,
            )
        for subject_name, request_entry in self.service.requests.items():
            ans = request_entry if isinstance(request_entry, Answer) else Answer(request_entry)
            reply(
                router,
                getattr(subjects, subject_name),
                name,
                _first_parameter_type(ans.handler),
                _return_type(ans.handler),
                self._answerer(ans.handler),
                workers=ans.workers(settings),
            )
        for subject_name, notice in self.service.notices.items():
            subject = getattr(subjects, subject_name)
            router.subscriber(subject, title=f"{name}:{subject}")(self._notice(notice))
        for event_type in self.service.publishes:
            subject = subjects.of(event_type)
            router.publisher(subject, schema=event_type, title=f"{name}:{subject}:publish")
        return router

    def _applier(self, spec: Consumer) -> Callable[[Event], Awaitable[None]]:
        if not spec.inbox:
            plain = typing.cast(PlainEventHandler, spec.handler)

            async def handle(event: Event) -> None:
                await plain(event, self.deps)

            return handle
        handler = typing.cast(EventHandler, spec.handler)

        async def apply(event: Event) -> None:
            await apply_once(handler, event, self.deps)

        return apply

    def _batch_applier(self, spec: Consumer) -> Callable[[Sequence[Delivered]], Awaitable[None]]:
        handler = typing.cast(EventHandler, spec.handler)

        async def apply(batch: Sequence[Delivered]) -> None:
            events, traces = [d.event for d in batch], [propagate.extract(d.raw.headers or {}) for d in batch]
            await apply_batch(handler, events, self.deps, traces, spec.order)

        return apply

    def _told_invalid(self, handler: InvalidHandler) -> Callable[[bytes, str], Awaitable[None]]:
        async def told(raw: bytes, problem: str) -> None:
            await handler(raw, problem, self.deps)

        return told

    def _answerer(self, handler: RequestHandler) -> Callable[[BaseModel], Awaitable[BaseModel]]:
        async def answer_request(request: BaseModel) -> BaseModel:
            return await handler(request, self.deps)

        return answer_request

    def _notice(self, handler: JobHandler) -> Callable[[], Awaitable[None]]:
        async def on_notice() -> None:
            await handler(self.deps)

        return on_notice

    async def _run_job(self, job: Job) -> None:
        interval = job.interval(self.settings)
        first = job.first_after(self.settings) if job.first_after is not None else None

        def done() -> bool:
            if job.until is None or not job.until(self.deps):
                return False
            log.info("job done: nothing left for it to do", job=job.name)
            return True

        while not done():
            if first is not None:
                await asyncio.sleep(first)
                first = None
            elif job.wake is None:
                await asyncio.sleep(interval)
            else:
                wake = job.wake(self.deps)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
            if done():
                return
            try:
                await job.run(self.deps)
            except Exception:
                log.exception("job failed; it runs again at its next turn", job=job.name)

    # --- life cycle -----------------------------------------------------------------------

    async def start_dependencies(self) -> None:
        """Pool, migrations, streams, outbox and the service's dependencies, before any message."""
        settings = self.settings
        self._pool = await create_pool(settings.database_url or "", self.name, max_size=settings.db_pool_size)
        await migrate(self._pool, self.name, self.service.migrations)
        client = await self.broker.connect()
        await ensure_streams(client.jetstream(), settings, move_old_events=False)  # the upgrade is the operator's
        self._outbox = OutboxRelay(self._pool, self.broker, settings)
        self._deps = await self.service.deps(self)

    def start_background(self) -> None:
        if self._outbox is not None:
            self._outbox.start()
        prune = every(lambda s: s.prune_interval, self.prune, first_after=lambda _: random.uniform(10, 60))  # noqa: S311 (jitter)
        for job in (*self.service.jobs, prune):
            self._spawn(self._run_job(job), job.name)

    async def prune(self, deps: Deps) -> dict[str, int]:
        """The inbox, the outbox and the service's per-task tables, past their retention."""
        return await retention.prune(deps.pool, deps.clock(), deps.settings, self.service.retention)

    async def stop_background(self) -> None:
        """Jobs and the outbox relay stopped, and what the outbox holds published once more while
        the bus is still there (a row written later, by a message still in hand, goes out at the
        next start)."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._outbox:
            await self._outbox.stop()
            try:
                await self._outbox.flush()
            except Exception:
                log.exception("the last outbox flush failed; the rows go out at the next start")

    async def close(self, *, shutdown_tracer: bool = True) -> None:
        """After the broker stopped: the dependencies' own resources (their ``aclose``, when they have
        one), the pool (and the tracer provider, when it is the service's own)."""
        closer = getattr(self._deps, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                log.exception("closing the service's dependencies failed")
        if self._pool:
            await self._pool.close()
        if shutdown_tracer:
            self.tracer_provider.shutdown()

    async def start(self) -> None:
        """Start the whole service inside this process (no HTTP): what the in-process system runs."""
        await self.start_dependencies()
        await self.broker.start()
        self.start_background()

    async def stop(self, *, shutdown_tracer: bool = True) -> None:
        """As a shutdown does: background work, then the broker (messages in hand finish), then the
        pool. Each step is bounded: a stop that hangs (seen once: FastStream restarting a pull task
        while its subscriber stopped) is logged and cut short, so a stop always ends."""
        for step, timeout in ((self.stop_background, 30.0), (self.broker.stop, 30.0)):
            try:
                await asyncio.wait_for(step(), timeout)
            except TimeoutError:
                log.error("a stop step did not finish in time; going on", step=step.__qualname__, seconds=timeout)
        await self.close(shutdown_tracer=shutdown_tracer)


def build_broker(
    settings: Settings,
    name: str,
    tracer_provider: TracerProvider,
    registry: CollectorRegistry,
    *,
    on_closed: Callable[[], Awaitable[None]] | None = None,
    letters: DeadLetters | None = None,
) -> PatientBroker:
    """``on_closed``: the connection is closed for good (reconnects exhausted, or stopped). Its pull
    subscriptions wait out a lost connection and nats-py's stray timeouts (``routewise.runtime.pull``)."""
    return PatientBroker(
        settings.nats_url,
        max_reconnect_attempts=settings.nats_reconnect_attempts,
        reconnect_time_wait=settings.nats_reconnect_wait,  # type: ignore[arg-type]  # seconds, fractions too
        closed_cb=on_closed,
        security=(NatsUserPassword(settings.nats_user, settings.nats_password or "") if settings.nats_user else None),
        name=f"routewise-{name}",
        inbox_prefix=settings.nats_inbox_prefix,
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracer_provider),
            NatsPrometheusMiddleware(registry=registry, app_name=f"routewise-{name}"),
            DeadLetterMiddleware.configured(letters or DeadLetters(settings, name, dead_letter_counter(registry))),
        ],
        logger=logging.getLogger(f"routewise.{name}.faststream"),
        log_level=logging.DEBUG,  # FastStream's "Received"/"Processed" per message: only when asked for
        graceful_timeout=10.0,
    )


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "routewise_dead_letters_total",
        "Messages dead-lettered (see `routewise deadletters`), by the service that wrote them and why",
        ["service", "reason"],
        registry=registry,
    )


def build_runtime(
    service: Service[Any],
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    on_bus_gone: Callable[[], Awaitable[None]] | None = None,
) -> Runtime:
    """The service's broker with every subscriber of its table, not yet connected. ``on_bus_gone``:
    the bus connection closed for good while the service was not stopping."""
    if not settings.database_url:
        raise SystemExit(f"ROUTEWISE_DATABASE_URL is not set: {service.name} needs its own Postgres role's DSN")
    settings = as_service(settings, service.name)  # its own bus user, where the URL is the operator's
    tracer_provider = tracer_provider or setup_tracing(f"routewise-{service.name}")
    registry = CollectorRegistry()
    runtime: list[Runtime] = []

    async def closed() -> None:
        if on_bus_gone is not None and not runtime[0].stopping:
            await on_bus_gone()

    letters = DeadLetters(settings, service.name, dead_letter_counter(registry))
    broker = build_broker(settings, service.name, tracer_provider, registry, on_closed=closed, letters=letters)
    rt = Runtime(service, settings, broker, tracer_provider, registry, letters)
    runtime.append(rt)
    broker.include_router(rt.router())
    return rt


def build_app(service: Service[Any], settings: Settings | None = None) -> tuple[AsgiFastStream, Runtime]:
    settings = settings or Settings()
    setup_logging(service.name, settings.log_level)
    runtime: list[Runtime] = []

    async def bus_gone() -> None:
        """Reconnects exhausted: shut down (health says so meanwhile) and exit non-zero, so that a
        supervisor (compose's restart policy, Kubernetes, systemd) starts the service again."""
        log.error(
            "the bus connection is gone for good; stopping, to be restarted",
            attempts=settings.nats_reconnect_attempts,
            nats_url=settings.nats_url,
        )
        runtime[0].bus_gone = True
        os.kill(os.getpid(), signal.SIGTERM)
        # a graceful stop without a bus may not finish (FastStream's pull loops spin once their
        # connection is closed): whatever happens, the process is gone within the stop grace
        watchdog = threading.Timer(settings.stop_grace, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()

    rt = build_runtime(service, settings, on_bus_gone=bus_gone)
    runtime.append(rt)

    async def exit_if_bus_gone() -> None:
        """Last of the shutdown: a service stopped because its bus is gone exits with 1 now (uvicorn
        would end it by raising its SIGTERM again, and a supervisor must read a failure)."""
        if rt.bus_gone:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    async def after_startup() -> None:
        rt.start_background()
        log.info("service ready", nats_url=settings.nats_url, http_port=settings.http_port)

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return _json(200, {"status": "alive", "service": service.name})

    @get
    async def readyz(scope: Any) -> AsgiResponse:
        checks: dict[str, str] = {}
        checks["nats"] = "ok" if await rt.broker.ping(timeout=1.0) else "down"
        try:
            async with rt.pool.acquire(timeout=1.0) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values()) and rt.broker.running
        return _json(200 if ready else 503, {"ready": ready, "service": service.name, "checks": checks})

    app = ServiceAsgi(
        rt.broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app(rt.registry))],
        on_startup=[rt.start_dependencies],
        after_startup=[after_startup],
        on_shutdown=[rt.stop_background],
        after_shutdown=[rt.close, exit_if_bus_gone],
        asyncapi_path="/docs/asyncapi",
        logger=logging.getLogger(f"routewise.{service.name}"),
    )
    app.runtime = rt
    return app, rt


class ServiceAsgi(AsgiFastStream):
    """FastStream's ASGI app (exact-path routes, lifespan) handing every other HTTP request to the
    service's own API (``Service.http``), when it has one."""

    runtime: Runtime | None = None

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        own = self.runtime.http_app if self.runtime is not None and scope["type"] == "http" else None
        if own is None:
            await super().not_found(scope, receive, send)
            return
        await own(scope, receive, send)


def _json(status: int, body: dict[str, Any]) -> AsgiResponse:
    return AsgiResponse(json.dumps(body).encode(), status_code=status, headers={"content-type": "application/json"})


def run(service: Service[Any]) -> None:
    """Entry point of ``python -m routewise.services.<name>``."""
    settings = Settings()
    app, rt = build_app(service, settings)
    # log_config=None: uvicorn's loggers go through the same JSON renderer as everything else
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "access_log": "false",
        "log_config": None,
    }
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvloop: less CPU per message
        runner.run(app.run(run_extra_options=options))
    if rt.bus_gone:
        raise SystemExit(1)
