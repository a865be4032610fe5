"""What the chaos test runs and breaks: a NATS and a Postgres of its own (it kills and restarts
them, so never the servers other tests share) and the services as separate processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from routewise.dev.embedded import EmbeddedNats, EmbeddedPostgres
from routewise.dev.provision import provision
from routewise.dev.stack import Stack

READY_TIMEOUT_S = 120.0
for chatty in ("httpx", "pgserver"):  # not a line per /readyz poll, nor pgserver's every step
    logging.getLogger(chatty).setLevel(logging.WARNING)


@dataclass
class Fault:
    what: str
    at_s: float
    """Seconds into the traffic when it was injected."""
    back_after_s: float | None = None
    """Seconds until every service answered /readyz again."""


@dataclass
class Exit:
    """A service process that ended without being killed by the test (a supervisor restarts it)."""

    service: str
    code: int | None
    at_s: float
    log_tail: str


@dataclass
class Cluster:
    workdir: Path
    namespace: str
    replicas: dict[str, int]
    extra_env: dict[str, str]
    nats: EmbeddedNats = field(init=False)
    postgres: EmbeddedPostgres = field(init=False)
    stack: Stack = field(init=False)
    freeze_s: float = 25.0
    """How long a frozen Postgres stays stopped: longer than a message's ack wait."""
    faults: list[Fault] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    _breaking: bool = False

    async def start(self) -> None:
        # NATS as routewise dev runs it (every write synced before it is acknowledged); Postgres
        # kept on disk across its own restarts (pytest removes the directory later)
        self.nats = EmbeddedNats(self.workdir / "nats")
        self.postgres = EmbeddedPostgres(self.workdir / "pg", keep=True)
        nats_url = await asyncio.to_thread(self.nats.start)
        admin_dsn = await asyncio.to_thread(self.postgres.start)
        dsns = await provision(admin_dsn, "routewise")
        self.stack = Stack(nats_url, dsns, self.namespace, self.workdir / "logs", services=(), extra_env=self.extra_env)
        for name, count in self.replicas.items():
            for i in range(count):
                self.stack.start_service(name, instance=str(i + 1) if i else "")
        await self.wait_ready()

    def stop(self) -> None:
        if hasattr(self, "stack"):
            self.stack.stop()
        if hasattr(self, "nats"):
            self.nats.stop()
        if hasattr(self, "postgres"):
            self.postgres.stop()

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def processes(self) -> list[str]:
        return sorted(self.stack.processes)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started_at, 1)

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every service process answers /readyz (restarting any that ended on its own)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                self.restart_exited()
                pending = [key for key, sp in self.stack.processes.items() if not await _ready(http, sp.port)]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    tails = "\n".join(f"--- {k}:\n{self.stack.processes[k].log_tail()}" for k in pending)
                    raise TimeoutError(f"not ready after {timeout}s: {pending}\n{tails}")
                await asyncio.sleep(0.2)

    # --- faults ---------------------------------------------------------------------------

    async def inject(self, what: str, action: str) -> Fault:
        """Break something (``action``: a process key to kill -9, ``nats``, ``postgres`` or
        ``postgres-freeze``, ``freeze:<process key>``), then wait until every service is ready again."""
        fault = Fault(what, self.elapsed())
        self.faults.append(fault)
        self._breaking = True
        try:
            if action == "nats":
                await asyncio.to_thread(self._restart_nats)
            elif action == "postgres":
                await asyncio.to_thread(self._kill_postgres)
            elif action == "postgres-freeze":
                await asyncio.to_thread(self._freeze, self._postgres_processes())
            elif action.startswith("freeze:"):
                await asyncio.to_thread(self._freeze, [psutil.Process(self.stack.processes[action[7:]].proc.pid)])
            else:
                await asyncio.to_thread(self._kill_service, action)
        finally:
            self._breaking = False
        began = time.monotonic()
        await self.wait_ready()
        fault.back_after_s = round(time.monotonic() - began, 1)
        return fault

    def _kill_service(self, key: str) -> None:
        name, _, instance = key.partition("#")
        self.stack.stop_service(key, kill=True)
        self.stack.start_service(name, instance=instance)

    def _restart_nats(self) -> None:
        """Stop NATS and start it again on the same port and store directory."""
        self.nats.stop()
        self.nats.start()

    def _postgres_processes(self) -> list[psutil.Process]:
        """The postmaster (first line of its postmaster.pid) and its children."""
        postmaster = psutil.Process(int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0]))
        return [postmaster, *postmaster.children()]

    def _kill_postgres(self) -> None:
        """SIGKILL the postmaster (no shutdown, no checkpoint), wait until its backends are gone,
        start it again on the same data directory: crash recovery from the WAL."""
        family = self._postgres_processes()
        family[0].kill()
        _, alive = psutil.wait_procs(family, timeout=60)
        if alive:
            raise RuntimeError(f"Postgres processes outlived their postmaster: {alive}")
        self.postgres.stop()  # forgets the dead server; its data stays
        self.postgres.start()

    def log_counts(self, *events: str) -> dict[str, dict[str, int]]:
        """How often each service process (its log, over all its restarts) logged each event."""
        counts: dict[str, dict[str, int]] = {}
        for log_path in sorted((self.workdir / "logs").glob("*.log")):
            text = log_path.read_text(errors="replace")
            found = {event: text.count(f'"event": "{event}') for event in events}
            counts[log_path.stem] = {event: n for event, n in found.items() if n}
        return counts

    def _freeze(self, family: list[psutil.Process]) -> None:
        """SIGSTOP these processes for ``freeze_s`` (a stalled disk, a paused VM), then SIGCONT.
        What a frozen service was handling outlives its ack wait: the other replica is given it
        again, and the frozen one goes on with it when it resumes."""
        for process in family:
            process.suspend()
        try:
            time.sleep(self.freeze_s)  # the fault's duration, not a wait for something
        finally:
            for process in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()

    def restart_exited(self) -> list[Exit]:
        """As a supervisor: start again any service process that ended on its own."""
        if self._breaking:
            return []
        ended = []
        for key, sp in list(self.stack.processes.items()):
            if sp.proc.poll() is not None:
                ended.append(Exit(key, sp.proc.returncode, self.elapsed(), sp.log_tail(20)))
                self.stack.processes.pop(key)
                name, _, instance = key.partition("#")
                self.stack.start_service(name, instance=instance)
        self.exits += ended
        return ended


async def _ready(http: httpx.AsyncClient, port: int) -> bool:
    try:
        return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False
