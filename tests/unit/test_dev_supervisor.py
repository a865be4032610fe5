"""`routewise dev`'s supervisor: a stopped service starts again on its port, with backoff (1 s
doubling to 30 s, from 1 s again after a minute up), told as events; on an injected clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from routewise.dev.stack import Ready, Restarted, ServiceProcess, Stack, Stopped, Supervisor
from routewise.runtime.bus_users import derived_password, operator_url

PIDS = itertools.count(1000)


@dataclass
class FakeProcess:
    pid: int = field(default_factory=lambda: next(PIDS))
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeStack(Stack):
    """Processes that exit when told to, on the ports the real stack would use."""

    def start_service(self, service: str, port: int | None = None, *, instance: str = "") -> ServiceProcess:
        key = f"{service}#{instance}" if instance else service
        proc = cast(Any, FakeProcess())
        self.processes[key] = ServiceProcess(key, port or 7000 + len(self.processes), self.log_dir / "x", proc, service)
        return self.processes[key]

    def crash(self, name: str, code: int = -9) -> None:
        cast(FakeProcess, self.processes[name].proc).returncode = code


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def supervised(tmp_path: Path) -> tuple[FakeStack, Supervisor, Clock]:
    stack = FakeStack("nats://x", {}, "ns", tmp_path, services=("selector", "metrics"))
    stack.start()
    clock = Clock()
    supervisor = Supervisor(stack, clock=clock, is_ready=lambda sp: True)
    assert supervisor.check() == []
    return stack, supervisor, clock


def test_a_stopped_service_starts_again_on_its_port_and_the_others_are_left_alone(tmp_path: Path) -> None:
    stack, supervisor, clock = supervised(tmp_path)
    port, other = stack.processes["selector"].port, stack.processes["metrics"].proc.pid
    stack.crash("selector")
    assert supervisor.check() == [Stopped("selector", -9, tmp_path / "x", 1.0)]
    clock.now = 0.9
    assert supervisor.check() == []  # not before its delay
    clock.now = 1.0
    restarted = stack.processes["selector"]
    assert supervisor.check() == [Restarted("selector", stack.processes["selector"].proc.pid, port)]
    assert stack.processes["selector"] is not restarted and stack.processes["selector"].port == port
    assert supervisor.check() == [Ready("selector", port)]
    assert supervisor.check() == []  # said once
    assert stack.processes["metrics"].proc.pid == other


def test_the_delay_doubles_up_to_its_cap_and_starts_over_after_a_stable_run(tmp_path: Path) -> None:
    stack, supervisor, clock = supervised(tmp_path)
    delays = []
    for _ in range(7):  # a crash loop
        stack.crash("metrics", 1)
        stopped = supervisor.check()[0]
        assert isinstance(stopped, Stopped) and stopped.exit_code == 1
        delays.append(stopped.restart_in)
        clock.now += stopped.restart_in
        assert isinstance(supervisor.check()[0], Restarted)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    clock.now += 60  # up a minute: the next stop is a new story
    stack.crash("metrics")
    assert supervisor.check() == [Stopped("metrics", -9, tmp_path / "x", 1.0)]


def test_a_restarted_service_is_ready_when_its_readyz_says_so(tmp_path: Path) -> None:
    stack, supervisor, clock = supervised(tmp_path)
    answers = iter([False, False, True])
    supervisor.is_ready = lambda sp: next(answers)
    stack.crash("selector")
    supervisor.check()
    clock.now = 1
    supervisor.check()
    assert supervisor.check() == []
    assert supervisor.check() == []
    assert supervisor.check() == [Ready("selector", stack.processes["selector"].port)]


def test_a_service_process_gets_its_own_bus_user_never_the_operators_password(tmp_path: Path) -> None:
    operator = operator_url("nats://127.0.0.1:4222", "s3cret-operator")
    stack = Stack(operator, {"selector": "postgresql://x"}, "routewise", tmp_path)
    env = stack.env_for("selector", 8080)
    assert env["ROUTEWISE_NATS_URL"] == "nats://127.0.0.1:4222"
    assert env["ROUTEWISE_NATS_USER"] == "selector"
    assert env["ROUTEWISE_NATS_PASSWORD"] == derived_password("s3cret-operator", "selector")
    assert not any("s3cret-operator" in value for value in env.values())
    plain = Stack("nats://127.0.0.1:4222", {"selector": "postgresql://x"}, "routewise", tmp_path)
    assert "ROUTEWISE_NATS_USER" not in plain.env_for("selector", 8080)  # an unlocked server: no user
