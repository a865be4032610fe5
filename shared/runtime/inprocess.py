"""The whole system inside one process: every service's table on its own broker connection to one
real NATS, each on its own Postgres role and schema. What most end-to-end tests run: the same
handlers, subscribers, inbox, outbox and dead letters as the service processes, without the
seconds a process takes to start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import socket
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from routewise.contracts.subjects import SERVICES
from routewise.runtime.service import Runtime, Service, build_runtime
from routewise.runtime.settings import Settings


def service(name: str) -> Service[Any]:
    """A service's table (``services.<name>.app.SERVICE``)."""
    found: Service[Any] = importlib.import_module(f"routewise.services.{name}.app").SERVICE
    return found


@dataclass
class System:
    settings: Settings
    dsns: dict[str, str]
    tracer_provider: TracerProvider
    runtimes: dict[str, list[Runtime]] = field(default_factory=dict)
    """Each service's running replicas."""
    loop: asyncio.AbstractEventLoop | None = None
    """The loop the services run on (``in_background``'s own)."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = field(default_factory=list)
    """HTTP servers started by ``serve_http``, stopped with the system."""

    def deps(self, name: str, replica: int = 0) -> Any:
        """A running service's dependencies (its pool, price book, snapshots, ...)."""
        return self.runtimes[name][replica].deps

    async def start(self, name: str) -> Runtime:
        """Start one more replica of ``name``."""
        own = self.settings.model_copy(update={"database_url": self.dsns[name]})
        rt = build_runtime(service(name), own, tracer_provider=self.tracer_provider)
        self.runtimes.setdefault(name, []).append(rt)
        await rt.start()
        return rt

    async def serve_http(self, name: str, replica: int = 0, host: str = "127.0.0.1") -> str:
        """Serve a running service's own HTTP API (``Service.http``) on a real uvicorn, on a free
        port, on this loop; its base URL. Stopped with the system."""
        app = self.runtimes[name][replica].http_app
        if app is None:
            raise LookupError(f"{name} has no HTTP API of its own")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{name}")
        self.servers.append((server, task))
        while not server.started:  # uvicorn says it is listening by this flag only
            if task.done():
                task.result()
                raise RuntimeError(f"{name}'s HTTP server stopped at start")
            await asyncio.sleep(0.005)
        return f"http://{host}:{sock.getsockname()[1]}"

    async def stop_http(self) -> None:
        for server, task in self.servers:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
        self.servers.clear()

    async def stop(self, name: str) -> None:
        """Stop every replica of ``name``, as a shutdown would."""
        for rt in reversed(self.runtimes.pop(name, [])):
            await rt.stop(shutdown_tracer=False)  # the provider is the system's, shared

    async def restart(self, name: str) -> None:
        """Stop every replica of ``name`` and start as many again (state from Postgres and the bus)."""
        count = len(self.runtimes.get(name, []))
        await self.stop(name)
        for _ in range(count):
            await self.start(name)


@asynccontextmanager
async def in_process(
    settings: Settings,
    dsns: dict[str, str],
    services: Mapping[str, int] | Iterable[str] = SERVICES,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[System]:
    """Start ``services`` (names, or {name: replicas}; each with its own DSN from ``dsns``) in
    this process; stop them after."""
    replicas = services if isinstance(services, Mapping) else dict.fromkeys(services, 1)
    system = System(settings, dsns, tracer_provider or TracerProvider())
    try:
        for name, count in replicas.items():
            for _ in range(count):
                await system.start(name)
        yield system
    finally:
        await system.stop_http()
        for name in reversed(list(system.runtimes)):
            await system.stop(name)


@contextmanager
def in_background(
    settings: Settings, dsns: dict[str, str], services: Mapping[str, int] | Iterable[str] = SERVICES
) -> Iterator[System]:
    """``in_process`` on an event loop of its own, in a thread: for synchronous callers (a test
    module's fixture, a benchmark) that talk to the system over the bus as to processes.
    ``services``: names, or {name: replicas}."""
    started: concurrent.futures.Future[System] = concurrent.futures.Future()
    stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with in_process(settings, dsns, services) as system:
                system.loop = loop
                started.set_result(system)
                await stop.wait()
        except BaseException as exc:  # at start: the caller's; at stop: raised to the caller after
            (stopped if started.done() else started).set_exception(exc)
        else:
            stopped.set_result(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="routewise-in-process", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=120)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        if thread.is_alive():
            raise RuntimeError("the in-process system did not stop within 60 s")
        loop.close()
        if started.done() and started.exception() is None:
            stopped.result(0)  # a failure while stopping is the caller's to see
