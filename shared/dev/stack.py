"""Start the five services as separate processes and wait until each is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]

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
        self.processes[key] = ServiceProcess(key, port, log_path, proc)
        return self.processes[key]

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
