"""The services' pull loops on a real NATS: an idle service logs no ERROR, and a lost connection
does not stop the event loop (see routewise.runtime.pull)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import StreamConfig
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from routewise.dev.embedded import EmbeddedNats
from routewise.runtime.service import build_broker
from routewise.runtime.settings import Settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_error(self) -> list[str]:
        return [f"{r.getMessage()[:80]} ({r.exc_info[1]!r})" for r in self.records if r.levelno >= logging.ERROR]


@asynccontextmanager
async def pulling(
    settings: Settings, consumers: int, timeout: float, on_closed: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[tuple[NatsBroker, Records]]:
    """A service's broker with ``consumers`` idle durable pull consumers fetching every ``timeout`` s,
    started; what its FastStream logger says is recorded."""
    name = f"pull_{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(settings.nats_url)
    await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    records = Records()
    logger = logging.getLogger(f"routewise.{name}.faststream")
    logger.addHandler(records)
    broker = build_broker(settings, name, TracerProvider(), CollectorRegistry(), on_closed=on_closed)
    for i in range(consumers):

        @broker.subscriber(
            f"{name}.s{i}",
            stream=JStream(name, declare=False),
            durable=f"c{i}",
            pull_sub=PullSub(batch_size=16, timeout=timeout),
        )
        async def handle(body: bytes) -> None:
            pass

    try:
        await broker.start()
        yield broker, records
    finally:
        logger.removeHandler(records)
        if broker.connection.is_closed:  # its server is gone (a throwaway one): only stop the consumers
            with contextlib.suppress(Exception):  # each unsubscribe says the connection is closed
                await broker.stop()
            await nc.close()
        else:
            await broker.stop()
            await nc.jetstream().delete_stream(name)
            await nc.close()


async def test_idle_pull_loops_log_no_error(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py's fetch raised a bare asyncio.TimeoutError when the server's answer to its probe won the
    race with the caller's timer (a few idle fetches in a hundred); FastStream's loop let that one
    kill its task and logged "Task-N raised an exception, retrying" at ERROR: once per process,
    so at every service start. Short fetches here make thousands of those races in two seconds."""
    monkeypatch.setenv("FASTSTREAM_SUPERVISOR_CACHE_TTL", "0")  # every failure logged, not once per process
    async with pulling(settings, consumers=8, timeout=0.02) as (_, records):
        await asyncio.sleep(2)
    assert records.at_error() == []


ROOT = Path(__file__).resolve().parents[2]
STARVED_PROBE = """
import asyncio, sys
from tests.integration.test_pull import after_the_connection_closed
print(asyncio.run(after_the_connection_closed(sys.argv[1])), flush=True)
"""


def test_a_lost_connection_does_not_stop_the_event_loop(tmp_path: Path) -> None:
    """Once the connection is closed, nats-py's fetch raises ConnectionClosedError before it ever
    suspends, and FastStream's loop, which waits that error out, called it again at once: nothing
    else ran any more (health endpoints, shutdown). Now the closed connection is waited out. In a
    process of its own: on the old code its event loop never turns again, and it is killed."""
    server = EmbeddedNats(tmp_path / "nats", durable=False)
    try:
        url = server.start()
        assert server.proc is not None
        probe = subprocess.Popen(
            [sys.executable, "-c", STARVED_PROBE, url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PROBE_SERVER_PID": str(server.proc.pid)},
        )
        try:
            out, _ = probe.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            probe.kill()
            out, _ = probe.communicate()
        assert probe.returncode == 0, f"the event loop stopped turning once the connection closed: {out!r}"
        assert int(out.split()[-1]) > 20, f"the event loop turned {out.strip()} times in a second"
    finally:
        server.stop()


async def after_the_connection_closed(nats_url: str) -> int:
    """Idle pull consumers on ``nats_url``, whose server is stopped (by this function, once they
    pull): how often the event loop turns in the second after the connection closed for good."""
    settings = Settings(nats_url=nats_url, nats_reconnect_attempts=1, nats_reconnect_wait=0.2)
    closed = asyncio.Event()

    async def reconnects_exhausted() -> None:
        closed.set()

    async with pulling(settings, consumers=4, timeout=0.5, on_closed=reconnects_exhausted):
        os.kill(int(os.environ["PROBE_SERVER_PID"]), signal.SIGTERM)
        await asyncio.wait_for(closed.wait(), 20)
        ticks, started = 0, time.monotonic()
        while time.monotonic() - started < 1.0:  # sleeps end on time when the loop turns
            await asyncio.sleep(0.01)
            ticks += 1
    return ticks
