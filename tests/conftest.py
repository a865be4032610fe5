"""Fixtures that give real NATS (JetStream) and Postgres; see tests/servers.py for the order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest

from routewise.contracts.subjects import SERVICES
from routewise.dev.provision import drop_database, dsn_with, provision
from routewise.dev.stack import Stack
from routewise.runtime.db import create_pool, migrate
from routewise.runtime.inprocess import System, in_background, in_process, service
from routewise.runtime.logs import setup_logging
from routewise.runtime.settings import Settings
from tests.servers import nats_server, postgres_server


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "servers: "
        + ("NATS from env" if os.environ.get("ROUTEWISE_NATS_URL") else "NATS: testcontainers or embedded")
        + ", "
        + ("Postgres from env" if os.environ.get("ROUTEWISE_DATABASE_URL") else "Postgres: testcontainers or embedded")
    ]


@pytest.fixture(scope="session", autouse=True)
def _logs_to_stderr() -> None:
    """Services running inside the test process log to stderr, as they do as processes: never into
    the standard output a CLI run in this process is read from."""
    setup_logging("tests", "INFO", json=False)


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """Where this session's embedded servers keep their data: a directory of its own, outside
    pytest's base temp (which tools, and people, clean while a long run still uses it)."""
    with tempfile.TemporaryDirectory(prefix="routewise-test-servers-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def nats_url(servers_dir: Path) -> Iterator[str]:
    with nats_server(servers_dir / "nats") as (url, _how):
        yield url


@pytest.fixture(scope="session")
def pg_admin_dsn(servers_dir: Path) -> Iterator[str]:
    with postgres_server(servers_dir / "pg") as (dsn, _how):
        yield dsn


@dataclass(frozen=True)
class Database:
    admin_dsn: str  # superuser, connected to this test run's database
    name: str
    dsns: dict[str, str]  # each service's own role


@pytest.fixture(scope="module")
def database(pg_admin_dsn: str) -> Iterator[Database]:
    """A fresh database for each test module, with the roles and schemas of deploy/postgres: what
    one module's services learn (model health, learner weights, output profiles) cannot leak
    into the next module's decisions."""
    name = f"rw_test_{uuid.uuid4().hex[:10]}"
    dsns = asyncio.run(provision(pg_admin_dsn, name))
    yield Database(dsn_with(pg_admin_dsn, database=name), name, dsns)
    asyncio.run(drop_database(pg_admin_dsn, name))


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def delete_streams(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subjects = Settings(namespace=namespace).subjects
        for stream in subjects.streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(stream.name)
        buckets = (subjects.performance_bucket, subjects.catalog_bucket, subjects.profiles_bucket)
        for bucket in buckets:  # KV buckets are streams too
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
    finally:
        await nc.close()


@pytest.fixture
async def settings(nats_url: str) -> AsyncIterator[Settings]:
    """Settings on an isolated namespace (its own subjects and streams), quick retries."""
    namespace = new_namespace()
    yield Settings(nats_url=nats_url, namespace=namespace, max_deliver=3, retry_backoff=[0.2], request_timeout=5)
    await delete_streams(nats_url, namespace)


@pytest.fixture
async def system(settings: Settings, database: Database) -> AsyncIterator[System]:
    """All five services in this process (typed subscribers, inbox, outbox, jobs) on the test's
    namespace and the module's database: most end-to-end flows run here, in milliseconds."""
    async with in_process(settings, database.dsns) as running:
        yield running


@pytest.fixture
async def service_pool(database: Database) -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Pool]]]:
    """``await service_pool(name)``: a pool on that service's role and schema, migrated: for
    calling its handlers directly."""
    pools: list[asyncpg.Pool] = []

    async def open_pool(name: str) -> asyncpg.Pool:
        pool = await create_pool(database.dsns[name], name, max_size=4)
        await migrate(pool, name, service(name).migrations)
        pools.append(pool)
        return pool

    yield open_pool
    for pool in pools:
        await pool.close()


@pytest.fixture
async def admin(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.admin_dsn)
    yield conn
    await conn.close()


@dataclass
class RunningStack:
    """Routewise running for a test module: the five services (or some) as separate processes
    (``running``), or inside the test process on a thread of their own (``in_process_stack``).
    Either way tests talk to it over the real bus, and the CLI runs as a user would run it."""

    nats_url: str
    namespace: str
    database: Database
    stack: Stack | None = None
    system: System | None = None

    @property
    def settings(self) -> Settings:
        return Settings(nats_url=self.nats_url, namespace=self.namespace, request_timeout=10)

    @property
    def processes(self) -> Stack:
        assert self.stack is not None, "this test needs the services as processes (running(...))"
        return self.stack

    def restart(self, *names: str) -> None:
        """Stop these services (every replica) and start them again."""
        if self.stack is not None:
            keys = [k for k in self.stack.processes if k.split("#")[0] in names]
            for key in keys:
                self.stack.stop_service(key)
            for key in keys:
                name, _, instance = key.partition("#")
                self.stack.start_service(name, instance=instance)
            self.stack.wait_ready(60)
            return
        assert self.system is not None and self.system.loop is not None
        for name in names:
            asyncio.run_coroutine_threadsafe(self.system.restart(name), self.system.loop).result(60)

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
        env.update({"ROUTEWISE_NATS_URL": self.nats_url, "ROUTEWISE_NAMESPACE": self.namespace})
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``routewise ARGS`` against this stack: a process of its own when the services are
        processes; in this process (typer's runner, on a thread of its own) when they are not."""
        if self.stack is not None:
            return subprocess.run(
                [sys.executable, "-m", "routewise.cli", *args],
                capture_output=True,
                text=True,
                env=self.cli_env(),
                timeout=60,
                check=False,
            )
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(run_cli, list(args), self.cli_env()).result(timeout=60)


_CLI_LOCK = threading.Lock()


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in this process, as ``routewise ARGS`` with ``env`` (one at a time: the runner
    swaps the process's environment and standard streams while it runs)."""
    from typer.testing import CliRunner

    from routewise.cli import app

    with _CLI_LOCK:
        result = CliRunner().invoke(app, args, env={k: None for k in os.environ if k not in env} | env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["routewise", *args], result.exit_code, result.stdout, result.stderr)


TEST_SERVICE_ENV = {"ROUTEWISE_MAX_DELIVER": "3", "ROUTEWISE_RETRY_BACKOFF": "[0.2]", "ROUTEWISE_DB_POOL_SIZE": "6"}
"""The test stacks' settings: quick retries, and six Postgres connections per service (six
services a stack, two workers sharing one server: within Postgres's default 100 connections)."""


def settings_from_env(namespace: str, nats_url: str, env: dict[str, str] | None = None) -> Settings:
    """Quick retries, and any ``ROUTEWISE_*`` overrides in ``env`` (as a service process would read them)."""
    overrides = {**TEST_SERVICE_ENV, **(env or {})}
    with _CLI_LOCK, pytest.MonkeyPatch.context() as patch:
        for key, value in overrides.items():
            patch.setenv(key, value)
        return Settings(nats_url=nats_url, namespace=namespace)


@contextmanager
def running(
    nats_url: str, database: Database, log_dir: Path, services: dict[str, int], extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """``services`` ({name: replicas}) as separate processes on a fresh namespace, quick retries."""
    namespace = new_namespace()
    stack = Stack(
        nats_url,
        database.dsns,
        namespace,
        log_dir,
        services=(),
        extra_env={**TEST_SERVICE_ENV, **(extra_env or {})},
    )
    try:
        for name, replicas in services.items():
            for i in range(replicas):
                stack.start_service(name, instance=str(i + 1) if i else "")
        stack.wait_ready(timeout=90)
        yield RunningStack(nats_url, namespace, database, stack=stack)
    finally:
        stack.stop()
        asyncio.run(delete_streams(nats_url, namespace))


@contextmanager
def in_process_stack(
    nats_url: str, database: Database, services: dict[str, int] | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """``services`` ({name: replicas}; default all five) inside this process, on a thread of their
    own, on a fresh namespace, quick retries: the same tables, subscribers, inbox and outbox as
    the processes, started in a fraction of a second."""
    namespace = new_namespace()
    settings = settings_from_env(namespace, nats_url, extra_env)
    try:
        with in_background(settings, database.dsns, services or dict.fromkeys(SERVICES, 1)) as system:
            yield RunningStack(nats_url, namespace, database, system=system)
    finally:
        asyncio.run(delete_streams(nats_url, namespace))


@pytest.fixture(scope="module")
def running_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    """The five services inside the test process, on their own namespace."""
    with in_process_stack(nats_url, database) as stack:
        yield stack


@pytest.fixture(scope="module")
def process_stack(
    nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """The five services as separate processes, on their own namespace (for what only processes
    show: restarts, HTTP endpoints, tracing across processes)."""
    with running(nats_url, database, tmp_path_factory.mktemp("stack-logs"), dict.fromkeys(SERVICES, 1)) as stack:
        yield stack
