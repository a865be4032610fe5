"""The gateway when its decision is late: the request is answered 504 in time, and the hold of a
decision that comes after it is given back (nobody runs that task)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import openai
import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.dev.mock_provider import MockProvider
from tests.conftest import Database
from tests.helpers import eventually
from tests.system.test_gateway import PROMPT, serving


def test_a_late_decision_answers_504_and_its_hold_is_given_back(nats_url: str, database: Database) -> None:
    late = {"ROUTEWISE_GATEWAY_DECISION_TIMEOUT": "1"}
    with MockProvider(seed=13) as mock, serving(nats_url, database, mock, late) as gateway:
        stack, system = gateway.stack, gateway.stack.system
        assert system is not None
        org = f"late-{uuid.uuid4().hex[:8]}"
        created = stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", "5", "--json")
        assert created.returncode == 0, created.stdout + created.stderr
        gateway.run(system.stop("selector"))  # nobody decides for now

        with pytest.raises(openai.InternalServerError) as refused:
            gateway.client(org).chat.completions.create(model="routewise/auto", messages=PROMPT)
        assert refused.value.status_code == 504 and refused.value.code == "decision_timeout"
        task_id = refused.value.response.headers["x-routewise-task-id"]

        gateway.run(system.start("selector"))  # the task is decided now, its hold taken: for nobody

        async def hold() -> str | None:
            conn = await asyncpg.connect(database.admin_dsn)
            try:
                status: str | None = await conn.fetchval(
                    "SELECT status FROM budget_enforcer.reservations WHERE task_id = $1", uuid.UUID(task_id)
                )
            finally:
                await conn.close()
            return status if status not in (None, "held") else None

        assert asyncio.run(eventually(hold, timeout=20)) == "released"

        async def nothing_held() -> bool:
            async with RoutewiseClient(stack.settings) as rw:
                status = await rw.request(
                    rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
                )
            return status.budgets[0].reserved_usd == 0

        assert asyncio.run(eventually(nothing_held, timeout=10))
        assert not mock.calls()  # and no provider was called for it
