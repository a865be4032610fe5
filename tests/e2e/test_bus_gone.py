"""A service whose bus is away says so on /readyz while it reconnects, and goes on once the bus is
back; one whose bus is gone for good exits non-zero, saying why, so that a supervisor restarts it
(it used to spin at 35-50 % CPU with its health endpoints silent and never exit)."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import Scope
from routewise.dev.embedded import EmbeddedNats
from routewise.dev.stack import Stack
from routewise.runtime.settings import Settings
from tests.conftest import Database, new_namespace
from tests.helpers import a_cost, eventually, record_trusted

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


def health(port: int, path: str) -> tuple[int, dict[str, object]]:
    """``path``'s status and JSON body; an answer later than 2 s fails."""
    answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2.0)
    return answer.status_code, answer.json()


def test_while_the_bus_reconnects_health_says_so_and_then_the_service_goes_on(
    database: Database, tmp_path: Path
) -> None:
    nats = EmbeddedNats(tmp_path / "nats", durable=False)  # a NATS of its own, to stop and start again
    namespace = new_namespace()
    stack = Stack(
        nats.start(),
        database.dsns,
        namespace,
        tmp_path / "logs",
        services=(),
        extra_env={"ROUTEWISE_NATS_RECONNECT_WAIT": "0.5"},
    )
    try:
        service = stack.start_service("budget_enforcer")
        stack.wait_ready(60)
        nats.stop()
        for _ in range(5):  # for a few seconds of the outage, every probe answers within 2 s
            status, body = health(service.port, "/readyz")
            assert (status, body["checks"]) == (503, {"nats": "down", "postgres": "ok"}), body
            assert health(service.port, "/healthz")[0] == 200
        nats.start()  # the same port and store
        deadline = time.monotonic() + 30
        while health(service.port, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, service.log_tail()
            time.sleep(0.2)
        assert service.proc.poll() is None
        org = f"org-{uuid.uuid4().hex[:8]}"
        assert asyncio.run(cost_applied(Settings(nats_url=nats.url, namespace=namespace), org)) == Decimal("0.25")
    finally:
        stack.stop()
        nats.stop()


async def cost_applied(settings: Settings, org: str) -> Decimal:
    """Record a 0.25 USD call for ``org`` and return what budget-enforcer says the org has spent."""
    async with RoutewiseClient(settings) as rw:
        await record_trusted(rw, a_cost(Scope(org_id=org), "0.25"))

        async def spent() -> BudgetStatus | None:
            status = await rw.request(
                settings.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
            )
            return status if status.costs_recorded else None

        return (await eventually(spent, timeout=30)).spent_usd
