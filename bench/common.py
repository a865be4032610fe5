"""Shared set-up for benchmarks: real NATS and Postgres (env URLs, else embedded), services as
processes, latency statistics, and results written under bench/results/."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from routewise.client.wire import msg_id_headers
from routewise.contracts.events import Event
from routewise.contracts.subjects import Subjects
from routewise.dev.embedded import EmbeddedNats, EmbeddedPostgres
from routewise.dev.provision import drop_database, dsn_with, provision
from routewise.dev.stack import Stack

RESULTS = Path(__file__).parent / "results"


@dataclass
class Environment:
    nats_url: str
    admin_dsn: str
    dsns: dict[str, str]
    namespace: str
    workdir: Path


@contextmanager
def environment_servers() -> Iterator[Environment]:
    """Servers (ROUTEWISE_NATS_URL / ROUTEWISE_DATABASE_URL, else embedded), a fresh database with
    each service's role and schema, and a fresh namespace."""
    workdir = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    nats_server = postgres = None
    nats_url = os.environ.get("ROUTEWISE_NATS_URL")
    admin = os.environ.get("ROUTEWISE_DATABASE_URL")
    if not nats_url:
        nats_server = EmbeddedNats(workdir / "nats")
        nats_url = nats_server.start()
    if not admin:
        postgres = EmbeddedPostgres(workdir / "pg", keep=False)
        admin = postgres.start()
    database = f"rw_bench_{uuid.uuid4().hex[:8]}"
    dsns = asyncio.run(provision(admin, database))
    try:
        yield Environment(nats_url, dsn_with(admin, database=database), dsns, f"bench{uuid.uuid4().hex[:8]}", workdir)
    finally:
        asyncio.run(drop_database(admin, database))
        if nats_server:
            nats_server.stop()
        if postgres:
            postgres.stop()


@contextmanager
def environment(services: dict[str, int]) -> Iterator[tuple[Environment, Stack]]:
    """``environment_servers`` with ``services`` ({name: replicas}) running as separate processes."""
    with environment_servers() as env:
        stack = Stack(env.nats_url, env.dsns, env.namespace, env.workdir / "logs", services=())
        try:
            for name, replicas in services.items():
                for i in range(replicas):
                    stack.start_service(name, instance="" if i == 0 else str(i + 1))
            stack.wait_ready(90)
            yield env, stack
        finally:
            stack.stop()


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "p50_ms": round(pct(0.50), 2),
        "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


async def publish_all(js: Any, subjects: Subjects, events: list[Event], *, in_flight: int = 500) -> None:
    """Publish events to JetStream (each on its subject: its org's) as fast as acks come back,
    ``in_flight`` at a time."""
    for chunk in range(0, len(events), in_flight):
        await asyncio.gather(
            *(
                js.publish(subjects.event(e), e.model_dump_json().encode(), headers=msg_id_headers(e))
                for e in events[chunk : chunk + in_flight]
            )
        )
