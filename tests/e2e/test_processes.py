"""What only processes show: a service stopped and started again catches up on what it missed,
and every service process serves health, readiness, Prometheus metrics and its AsyncAPI."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from shared.client import RoutewiseClient
from shared.events import CostRecorded, Scope
from tests.conftest import RunningStack
from tests.helpers import spend_once_recorded

pytestmark = pytest.mark.e2e


async def test_costs_published_while_a_service_is_down_are_applied_after_restart(process_stack: RunningStack) -> None:
    running_stack = process_stack
    org = f"restart-{uuid.uuid4().hex[:8]}"
    stack = running_stack.processes
    stack.stop_service("budget_enforcer")
    costs = [
        CostRecorded(
            task_id=uuid.uuid4(),
            scope=Scope(org_id=org),
            model="gpt-4o",
            provider="openai",
            input_tokens=10,
            output_tokens=10,
            cost_usd=Decimal("0.25"),
        )
        for _ in range(4)
    ]
    async with RoutewiseClient(running_stack.settings) as rw:
        for cost in costs:
            await rw.record_cost(cost)
            await rw.record_cost(cost)  # a client retry: same event_id
        await asyncio.to_thread(lambda: (stack.start_service("budget_enforcer"), stack.wait_ready(60)))
        final = await spend_once_recorded(rw, running_stack, org, 4)
    assert final.spent_usd == Decimal("1.00")
    assert final.costs_recorded == 4


async def test_services_serve_health_readiness_and_metrics(process_stack: RunningStack) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        for name, sp in process_stack.processes.processes.items():
            base = f"http://127.0.0.1:{sp.port}"
            assert (await http.get(f"{base}/healthz")).json()["service"] == name
            ready = (await http.get(f"{base}/readyz")).json()
            assert ready["ready"] is True and ready["checks"] == {"nats": "ok", "postgres": "ok"}
            metrics = (await http.get(f"{base}/metrics")).text
            assert "faststream_received_messages_total" in metrics
            asyncapi = await http.get(f"{base}/docs/asyncapi")
            assert asyncapi.status_code == 200
            assert process_stack.namespace in asyncapi.text  # documents this service's subjects
