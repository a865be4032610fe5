"""Provision a Routewise database: create it, apply deploy/postgres, return each service's DSN.

Used by ``routewise dev`` and the test harness; compose applies the same SQL through the
Postgres image's init directory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from routewise.contracts.subjects import SERVICES

DEPLOY_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres"


def role_for(service: str) -> str:
    return f"routewise_{service}"


def dsn_with(dsn: str, *, user: str | None = None, password: str | None = None, database: str | None = None) -> str:
    """The same server, another user and/or database. Keeps host, port and query (socket dirs)."""
    parts = urlsplit(dsn)
    hostport = parts.netloc.rpartition("@")[2]
    old_user = parts.username or ""
    old_password = parts.password
    user = user if user is not None else old_user
    password = password if password is not None else old_password
    cred = quote(user, safe="")
    if password is not None:
        cred += ":" + quote(password, safe="")
    netloc = f"{cred}@{hostport}" if cred else hostport
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def service_dsn(admin_dsn: str, service: str, database: str | None = None) -> str:
    role = role_for(service)
    return dsn_with(admin_dsn, user=role, password=role, database=database)


async def create_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


async def provision(admin_dsn: str, database: str) -> dict[str, str]:
    """Create ``database`` if needed, apply the roles and schemas, return {service: dsn}."""
    await create_database(admin_dsn, database)
    conn = await asyncpg.connect(dsn_with(admin_dsn, database=database))
    try:
        # roles are cluster-wide: serialise concurrent provisioning of several databases
        await conn.execute("SELECT pg_advisory_lock(7415, 1)")
        try:
            for path in sorted(DEPLOY_SQL.glob("*.sql")):
                await conn.execute(path.read_text())
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7415, 1)")
    finally:
        await conn.close()
    return {service: service_dsn(admin_dsn, service, database) for service in SERVICES}
