"""Postgres ownership, migrations, inbox and outbox — against a real Postgres (and NATS)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
from faststream.nats import NatsBroker

from routewise.contracts.events import Scope, TaskRejected
from routewise.dev.provision import dsn_with, provision
from routewise.runtime.db import (
    SHARED_MIGRATIONS,
    claim,
    claim_many,
    create_pool,
    digest_of,
    load_migrations,
    migrate,
    unit_of_work,
)
from routewise.runtime.outbox import OutboxRelay, enqueue
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams
from tests.conftest import Database


async def test_each_service_role_is_confined_to_its_own_schema(database: Database) -> None:
    conn = await asyncpg.connect(database.dsns["selector"])
    try:
        await conn.execute("CREATE TABLE selector.mine (x int)")  # its own schema: allowed
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM budget_enforcer.inbox")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE budget_enforcer.sneaky (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.sneaky (x int)")
    finally:
        await conn.close()


async def test_provisioning_twice_is_harmless(database: Database, pg_admin_dsn: str) -> None:
    again = await provision(pg_admin_dsn, database.name)
    assert again == database.dsns


def write_migrations(folder: Path, *sqls: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, sql in enumerate(sqls, start=1):
        (folder / f"{i:04d}_step{i}.sql").write_text(sql)
    return folder


async def fresh_schema(admin: asyncpg.Connection) -> str:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    return schema


async def test_concurrent_starts_apply_each_migration_once(
    admin: asyncpg.Connection, database: Database, tmp_path: Path
) -> None:
    schema = await fresh_schema(admin)
    folder = write_migrations(tmp_path, "CREATE TABLE counter (n int)", "INSERT INTO counter VALUES (1)")
    pools = [await create_pool(database.admin_dsn, schema) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(pool, schema, folder) for pool in pools))
    finally:
        for pool in pools:
            await pool.close()
    shared = len(load_migrations("shared", SHARED_MIGRATIONS))
    assert sorted(len(r) for r in results) == [0, 0, 0, shared + 2]  # the shared ones and the service's two
    assert await admin.fetchval(f'SELECT count(*) FROM "{schema}".counter') == 1


async def test_a_migration_changed_after_it_ran_is_refused(
    admin: asyncpg.Connection, database: Database, tmp_path: Path
) -> None:
    schema = await fresh_schema(admin)
    folder = write_migrations(tmp_path, "CREATE TABLE t (n int)")
    pool = await create_pool(database.admin_dsn, schema)
    try:
        await migrate(pool, schema, folder)
        (folder / "0001_step1.sql").write_text("CREATE TABLE t (n bigint)")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await migrate(pool, schema, folder)
    finally:
        await pool.close()


async def test_a_gap_in_migration_numbers_is_refused(
    admin: asyncpg.Connection, database: Database, tmp_path: Path
) -> None:
    schema = await fresh_schema(admin)
    (tmp_path / "0002_late.sql").write_text("SELECT 1")
    pool = await create_pool(database.admin_dsn, schema)
    try:
        with pytest.raises(ValueError, match="without gaps"):
            await migrate(pool, schema, tmp_path)
    finally:
        await pool.close()


@pytest.fixture
async def service_pool(admin: asyncpg.Connection, database: Database, tmp_path: Path) -> asyncpg.Pool:
    schema = await fresh_schema(admin)
    pool = await create_pool(database.admin_dsn, schema)
    await migrate(pool, schema, write_migrations(tmp_path / "m", "CREATE TABLE effects (event_id uuid)"))
    yield pool
    await pool.close()


async def test_the_inbox_applies_an_event_once_even_when_replicas_race(service_pool: asyncpg.Pool) -> None:
    event_id = uuid.uuid4()

    async def apply() -> bool:
        async with unit_of_work(service_pool) as conn:
            if not await claim(conn, event_id, "subject"):
                return False
            await conn.execute("INSERT INTO effects VALUES ($1)", event_id)
            await asyncio.sleep(0.05)  # hold the transaction open while the others arrive
            return True

    outcomes = await asyncio.gather(*(apply() for _ in range(5)))
    assert outcomes.count(True) == 1
    assert await service_pool.fetchval("SELECT count(*) FROM effects") == 1


async def test_a_failed_effect_releases_the_inbox_claim(service_pool: asyncpg.Pool) -> None:
    event_id = uuid.uuid4()

    async def apply_then_fail() -> None:
        async with unit_of_work(service_pool) as conn:
            assert await claim(conn, event_id, "subject")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await apply_then_fail()
    async with unit_of_work(service_pool) as conn:
        assert await claim(conn, event_id, "subject")  # the redelivery can apply it


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[NatsBroker]:
    """A started broker on the test's namespace, its streams made."""
    broker = NatsBroker(settings.nats_url)
    client = await broker.connect()
    await ensure_streams(client.jetstream(), settings)
    await broker.start()
    yield broker
    await broker.stop()


async def events_stored(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        return int((await nc.jetstream().stream_info(settings.subjects.events_stream.name)).state.messages)
    finally:
        await nc.close()


def rejected() -> TaskRejected:
    return TaskRejected(
        task_id=uuid.uuid4(), scope=Scope(org_id="acme"), task_type="normal", reason="invalid_request", detail="t"
    )


async def test_the_outbox_publishes_each_event_once(
    service_pool: asyncpg.Pool, settings: Settings, broker: NatsBroker
) -> None:
    event = rejected()
    async with unit_of_work(service_pool) as conn:
        await enqueue(conn, settings.subjects.event(event), event)
        await enqueue(conn, settings.subjects.event(event), event)  # a retried handler enqueues again
    relay = OutboxRelay(service_pool, broker, settings)
    assert await relay.flush() == 1
    assert await relay.flush() == 0
    # a crash between publish and marking: the row is published again, the stream drops it
    await service_pool.execute("UPDATE outbox SET published_at = NULL")
    assert await relay.flush() == 1
    assert await events_stored(settings) == 1


async def test_an_outbox_row_that_cannot_be_published_does_not_hold_back_its_batch(
    service_pool: asyncpg.Pool, settings: Settings, broker: NatsBroker
) -> None:
    events = [rejected() for _ in range(40)]  # more than one batch
    async with unit_of_work(service_pool) as conn:
        for i, event in enumerate(events):
            subject = f"{settings.namespace}.nowhere" if i == 3 else settings.subjects.event(event)
            await enqueue(conn, subject, event)
    relay = OutboxRelay(service_pool, broker, settings)
    assert await relay.flush() == 39
    stuck = await service_pool.fetch("SELECT attempts, last_error FROM outbox WHERE published_at IS NULL")
    assert [r["attempts"] for r in stuck] == [1] and stuck[0]["last_error"]
    assert await relay.flush() == 0  # tried again, still nowhere to go
    assert await events_stored(settings) == 39


def test_dsn_with_keeps_the_server_and_swaps_credentials() -> None:
    socket_dsn = "postgresql://postgres:@/postgres?host=/tmp/pg"
    assert dsn_with(socket_dsn, user="routewise_selector", password="pw", database="rw") == (
        "postgresql://routewise_selector:pw@/rw?host=/tmp/pg"
    )
    assert dsn_with("postgresql://a:b@db:5432/x", database="y") == "postgresql://a:b@db:5432/y"


async def test_an_event_id_applied_before_with_another_payload_is_not_applied_but_logged_and_counted(
    service_pool: asyncpg.Pool,
) -> None:
    conflicts: list[str] = []
    event_id = uuid.uuid4()
    first, second = digest_of(b'{"cost_usd":"1"}'), digest_of(b'{"cost_usd":"1000"}')
    async with service_pool.acquire() as conn:
        assert await claim(conn, event_id, "s", first, conflicts.append)
        assert not await claim(conn, event_id, "s", first, conflicts.append)  # a replay: quietly nothing
        assert not await claim(conn, event_id, "s", second, conflicts.append)  # a conflicting duplicate
    assert conflicts == ["s"]


async def test_a_batch_claims_each_id_once_at_its_first_place_and_counts_conflicting_duplicates(
    service_pool: asyncpg.Pool,
) -> None:
    conflicts: list[str] = []
    before, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    one, other = digest_of(b'{"n":1}'), digest_of(b'{"n":2}')
    async with service_pool.acquire() as conn, conn.transaction():
        assert await claim(conn, before, "s", one)
        batch = [(a, "s", one), (before, "s", one), (a, "s", one), (b, "s", one), (before, "t", other), (b, "u", other)]
        assert await claim_many(conn, batch, conflicts.append) == [0, 3]  # a and b, once each
        assert await claim_many(conn, batch, conflicts.append) == []  # the batch again: nothing
    assert conflicts == ["t", "u", "t", "u"]  # an id seen with another payload, before or in the batch
