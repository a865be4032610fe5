"""Fixtures that give real NATS (JetStream) and Postgres; see tests/servers.py for the order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest

from shared.db import create_pool, migrate
from shared.inprocess import System, in_process, service
from shared.provision import drop_database, dsn_with, provision
from shared.settings import Settings
from shared.stack import Stack
from shared.subjects import SERVICES
from tests.servers import nats_server, postgres_server


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        "servers: "
        + ("NATS from env" if os.environ.get("ROUTEWISE_NATS_URL") else "NATS: testcontainers or embedded")
        + ", "
        + ("Postgres from env" if os.environ.get("ROUTEWISE_DATABASE_URL") else "Postgres: testcontainers or embedded")
    ]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as (url, _how):
        yield url


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("pg")) as (dsn, _how):
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
        for stream in Settings(namespace=namespace).subjects.streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(stream.name)
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
    stack: Stack
    nats_url: str
    namespace: str
    database: Database

    @property
    def settings(self) -> Settings:
        return Settings(nats_url=self.nats_url, namespace=self.namespace, request_timeout=10)

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
        env.update({"ROUTEWISE_NATS_URL": self.nats_url, "ROUTEWISE_NAMESPACE": self.namespace})
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``routewise ARGS`` against this stack, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            capture_output=True,
            text=True,
            env=self.cli_env(),
            timeout=60,
            check=False,
        )


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
        extra_env={"ROUTEWISE_MAX_DELIVER": "3", "ROUTEWISE_RETRY_BACKOFF": "[0.2]", **(extra_env or {})},
    )
    try:
        for name, replicas in services.items():
            for i in range(replicas):
                stack.start_service(name, instance=str(i + 1) if i else "")
        stack.wait_ready(timeout=90)
        yield RunningStack(stack, nats_url, namespace, database)
    finally:
        stack.stop()
        asyncio.run(delete_streams(nats_url, namespace))


@pytest.fixture(scope="module")
def running_stack(
    nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """The five services as separate processes, on their own namespace."""
    with running(nats_url, database, tmp_path_factory.mktemp("stack-logs"), dict.fromkeys(SERVICES, 1)) as stack:
        yield stack
