"""Postgres: a pool bound to the service's own schema, migrations, and the inbox.

A service connects as its own role and sets ``search_path`` to its schema, so its SQL
names tables without a schema prefix and cannot wander into another service's tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection, or a pool's proxy for one: what a unit of work (``Deps.transaction``) holds."""

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own checks (which roll
    back an open transaction): nothing. Services keep no session state — search_path is a
    startup setting, advisory locks are transaction-scoped, nothing LISTENs — so asyncpg's default
    RESET ALL / UNLISTEN / unlock round trip on every release would be pure cost."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"routewise-{schema}"},
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


@dataclass(frozen=True)
class Migration:
    source: str  # "shared" or the service name
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: str, folder: Path) -> list[Migration]:
    """Numbered ``NNNN_name.sql`` files, in order; a gap or duplicate number is an error."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        if not number.isdigit():
            raise ValueError(f"migration {path} must be named NNNN_description.sql")
        found.append(Migration(source, int(number), name, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations in {folder} must be numbered 1..n without gaps: {versions}")
    return found


async def migrate(pool: asyncpg.Pool, schema: str, service_folder: Path) -> list[str]:
    """Apply shared then service migrations not yet applied, once, under an advisory lock.

    Returns the names applied. A changed migration that was already applied is an error:
    history is append-only.
    """
    plan = load_migrations("shared", SHARED_MIGRATIONS) + load_migrations(schema, service_folder)
    applied_now: list[str] = []
    lock_key = int.from_bytes(hashlib.sha256(f"routewise-migrate-{schema}".encode()).digest()[:8], "big", signed=True)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   source text NOT NULL,
                   version int NOT NULL,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (source, version))"""
        )
        done = {
            (r["source"], r["version"]): r["checksum"]
            for r in await conn.fetch("SELECT source, version, checksum FROM schema_migrations")
        }
        for migration in plan:
            key = (migration.source, migration.version)
            if key in done:
                if done[key] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.source}/{migration.version:04d}_{migration.name} "
                        "changed after it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (source, version, name, checksum) VALUES ($1, $2, $3, $4)",
                migration.source,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(f"{migration.source}/{migration.version:04d}_{migration.name}")
    if applied_now:
        log.info("migrations applied", schema=schema, applied=applied_now)
    return applied_now


Claim = tuple[UUID, str, bytes | None]
"""An event to claim in the inbox: its id, subject and digest (see ``claim``)."""


async def claim(
    conn: Connection,
    event_id: UUID,
    subject: str,
    digest: bytes | None = None,
    on_conflict: Callable[[str], None] | None = None,
) -> bool:
    """Record ``event_id`` in this service's inbox; False when it was applied before.

    Call inside the transaction that applies the event's effect: the effect and the
    inbox row commit together or not at all. A concurrent replica claiming the same id
    waits on the unique index and then sees the conflict. ``digest`` (of the event's canonical
    payload) is kept: an id seen before with another payload is a conflicting duplicate — not
    applied either, but logged and told to ``on_conflict(subject)``.
    """
    return bool(await claim_many(conn, [(event_id, subject, digest)], on_conflict))


async def claim_many(
    conn: Connection, claims: Sequence[Claim], on_conflict: Callable[[str], None] | None = None
) -> list[int]:
    """``claim`` for a batch, in one statement: the positions in ``claims`` claimed now (an id twice
    in the batch is claimed at its first position; the second is a duplicate like any other)."""
    ids, subjects, digests = zip(*claims, strict=True) if claims else ((), (), ())
    rows = await conn.fetch(
        "INSERT INTO inbox (event_id, subject, digest)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        ids,
        subjects,
        digests,
    )
    fresh = {row[0] for row in rows}
    claimed: list[int] = []
    first: dict[UUID, bytes | None] = {}
    for i, (event_id, _, digest) in enumerate(claims):
        if event_id in fresh and event_id not in first:
            claimed.append(i)
            first[event_id] = digest
    taken = set(claimed)
    repeats = [c for i, c in enumerate(claims) if i not in taken and c[2] is not None]
    if repeats:
        older = [event_id for event_id, _, _ in repeats if event_id not in first]
        query = "SELECT event_id, digest FROM inbox WHERE event_id = ANY($1::uuid[])"
        earlier = {row[0]: row[1] for row in await conn.fetch(query, older)} if older else {}
        earlier.update(first)
        for event_id, subject, digest in repeats:
            seen = earlier.get(event_id)
            if seen is None or bytes(seen) == digest:
                continue
            log.warning(
                "conflicting duplicate: an event id applied before came again with another payload; not applied",
                event_id=str(event_id),
                subject=subject,
            )
            if on_conflict is not None:
                on_conflict(subject)
    return claimed


def digest_of(payload: bytes) -> bytes:
    """What ``claim`` compares: a SHA-256 of the event's canonical JSON."""
    return hashlib.sha256(payload).digest()


@asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """One connection, one transaction: commit on success, roll back on any error."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn
