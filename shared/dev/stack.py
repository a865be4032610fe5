"""Start the five services as separate processes, wait until each is ready, and keep them running:
``Supervisor`` restarts a service process that stopped, with backoff."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import free_port
from routewise.runtime.bus_users import service_login

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    service: str = ""
    instance: str = ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Stack:
    nats_url: str
    dsns: dict[str, str]
    namespace: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def env_for(self, service: str, port: int) -> dict[str, str]:
        env = dict(os.environ)  # the user's ROUTEWISE_* settings (catalog, log level, retries) apply
        for login in ("ROUTEWISE_NATS_USER", "ROUTEWISE_NATS_PASSWORD"):  # each service logs in as itself
            env.pop(login, None)
        env.update(
            {
                "ROUTEWISE_NATS_URL": self.nats_url,
                "ROUTEWISE_DATABASE_URL": self.dsns[service],
                "ROUTEWISE_NAMESPACE": self.namespace,
                "ROUTEWISE_HTTP_HOST": "127.0.0.1",
                "ROUTEWISE_HTTP_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        # its own user, never the operator's credentials (routewise dev and the tests pass the operator's URL)
        for name, value in (service_login(env["ROUTEWISE_NATS_URL"], service) or {}).items():
            env[f"ROUTEWISE_{name.upper()}"] = value
        return env

    def start_service(self, service: str, port: int | None = None, *, instance: str = "") -> ServiceProcess:
        """Start one process of ``service``; another ``instance`` name runs a further replica."""
        port = port or free_port()
        key = f"{service}#{instance}" if instance else service
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{key}.log"
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", f"routewise.services.{service}"],
                cwd=PROJECT_ROOT,
                env=self.env_for(service, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches whoever started us; it decides the order of stopping
            )
        self.processes[key] = ServiceProcess(key, port, log_path, proc, service, instance)
        return self.processes[key]

    def restart_service(self, key: str) -> ServiceProcess:
        """Start ``key``'s process again (it has stopped) on the same port, so what was told of the
        stack (the dev state file, the table printed) stays true; its log goes on."""
        old = self.processes[key]
        return self.start_service(old.service or key, old.port, instance=old.instance)

    def start(self) -> None:
        for service in self.services:
            self.start_service(service)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        with httpx.Client(timeout=1.0) as http:
            while pending:
                for name in sorted(pending):
                    sp = self.processes[name]
                    if sp.proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {sp.proc.returncode}:\n{sp.log_tail()}")
                    try:
                        if http.get(f"http://127.0.0.1:{sp.port}/readyz").status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    tails = "\n".join(f"--- {n}:\n{self.processes[n].log_tail()}" for n in sorted(pending))
                    raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}\n{tails}")
                if pending:
                    time.sleep(0.1)

    def stop_service(self, service: str, *, kill: bool = False) -> None:
        sp = self.processes.pop(service, None)
        if sp is None or sp.proc.poll() is not None:
            return
        sp.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            sp.proc.wait(15)
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait()

    def stop(self) -> None:
        for service in list(self.processes):
            sp = self.processes[service]
            if sp.proc.poll() is None:
                sp.proc.send_signal(signal.SIGTERM)
        for service in list(self.processes):
            self.stop_service(service)


def ready(sp: ServiceProcess) -> bool:
    """Whether ``sp`` answers its /readyz with 200 now."""
    try:
        return httpx.get(f"http://127.0.0.1:{sp.port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class Stopped:
    """A service process stopped on its own; it starts again in ``restart_in`` seconds."""

    name: str
    exit_code: int
    log_path: Path
    restart_in: float


@dataclass(frozen=True)
class Restarted:
    name: str
    pid: int
    port: int


@dataclass(frozen=True)
class Ready:
    """A restarted service answers /readyz again."""

    name: str
    port: int


SupervisorEvent = Stopped | Restarted | Ready


@dataclass
class Supervisor:
    """Keeps the stack's processes running: one that stops (crash, kill -9, exit for a lost bus)
    is started again on its port after ``first_delay`` seconds, doubling at each stop in a row up
    to ``max_delay``; a process that had stayed up ``stable_after`` seconds starts from
    ``first_delay`` again. ``check()`` does one round and says what happened; the caller calls it
    every fraction of a second and prints the events. ``clock`` and ``is_ready`` are injectable."""

    stack: Stack
    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    is_ready: Callable[[ServiceProcess], bool] = ready
    _delay: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _starting: set[str] = field(default_factory=set)
    _up_since: dict[str, float] = field(default_factory=dict)

    def check(self) -> list[SupervisorEvent]:
        events: list[SupervisorEvent] = []
        now = self.clock()
        for name, sp in list(self.stack.processes.items()):
            self._up_since.setdefault(name, now)
            if name in self._due:
                if now >= self._due[name]:
                    del self._due[name]
                    started = self.stack.restart_service(name)
                    self._up_since[name] = now
                    self._starting.add(name)
                    events.append(Restarted(name, started.proc.pid, started.port))
            elif sp.proc.poll() is not None:
                events.append(self._stopped(name, sp, now))
            elif name in self._starting and self.is_ready(sp):
                self._starting.discard(name)
                events.append(Ready(name, sp.port))
        return events

    def _stopped(self, name: str, sp: ServiceProcess, now: float) -> Stopped:
        self._starting.discard(name)
        delay = self._delay.get(name, self.first_delay)
        if now - self._up_since[name] >= self.stable_after:
            delay = self.first_delay
        self._delay[name] = min(delay * 2, self.max_delay)
        self._due[name] = now + delay
        return Stopped(name, int(sp.proc.returncode or 0), sp.log_path, delay)
