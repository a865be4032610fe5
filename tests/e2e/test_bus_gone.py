"""A service whose bus is gone for good exits non-zero, saying why, so that a supervisor restarts
it (it used to spin at 35-50 % CPU with its health endpoints silent and never exit)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from routewise.dev.embedded import EmbeddedNats
from routewise.dev.stack import Stack
from tests.conftest import Database, new_namespace

pytestmark = pytest.mark.e2e


def test_a_service_whose_bus_is_gone_for_good_exits_to_be_restarted(database: Database, tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats", durable=False)  # a NATS of its own, to stop
    stack = Stack(
        nats.start(),
        database.dsns,
        new_namespace(),
        tmp_path / "logs",
        services=(),
        extra_env={
            "ROUTEWISE_NATS_RECONNECT_ATTEMPTS": "3",
            "ROUTEWISE_NATS_RECONNECT_WAIT": "0.5",
            "ROUTEWISE_STOP_GRACE": "2",
        },
    )
    try:
        service = stack.start_service("budget_enforcer")
        stack.wait_ready(60)
        nats.stop()
        deadline = time.monotonic() + 30
        while service.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.proc.returncode == 1, service.log_tail()
        assert "the bus connection is gone for good" in service.log_tail(200)
    finally:
        stack.stop()
        nats.stop()
