"""A service a decision needs, down for a while: the task waits (its deliveries are not spent),
and is answered: decided once the service is back, or rejected as unavailable at its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.events import ModelSelected, RejectionReason, Scope, TaskArrived, TaskRejected
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import eventually

DEADLINE_S = 6.0


@pytest.fixture(scope="module")
def stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    # two deliveries, 0.1 s apart: before, a task whose cost-predictor was down for a second was
    # dead-lettered unanswered
    env = {
        "ROUTEWISE_MAX_DELIVER": "2",
        "ROUTEWISE_RETRY_BACKOFF": "[0.1]",
        "ROUTEWISE_DECISION_DEADLINE": str(DEADLINE_S),
    }
    with in_process_stack(nats_url, database, extra_env=env) as running:
        yield running


def run_on_system(stack: RunningStack, coro: object) -> None:
    assert stack.system is not None and stack.system.loop is not None
    asyncio.run_coroutine_threadsafe(coro, stack.system.loop).result(60)  # type: ignore[arg-type]


def a_task() -> TaskArrived:
    return TaskArrived(scope=Scope(org_id="outage"), prompt="What is the capital of France?")


async def dead_letters(rw: RoutewiseClient) -> int:
    info = await rw.nc.jetstream().stream_info(rw.subjects.dead_letter_stream.name)
    return int(info.state.messages)


async def test_a_task_waits_for_budget_enforcer_and_is_decided_when_it_is_back(stack: RunningStack) -> None:
    assert stack.system is not None
    async with RoutewiseClient(stack.settings) as rw:
        before = await dead_letters(rw)
        run_on_system(stack, stack.system.stop("budget_enforcer"))
        try:
            waiting = asyncio.create_task(rw.submit_task(a_task(), wait=30))
            await asyncio.sleep(2.0)  # twenty times what two deliveries took before
            assert not waiting.done()
        finally:
            run_on_system(stack, stack.system.start("budget_enforcer"))
        outcome = await waiting
        assert isinstance(outcome, ModelSelected)
        assert await dead_letters(rw) == before


async def test_a_task_is_decided_while_cost_predictor_is_down(stack: RunningStack) -> None:
    """The selector estimates with what cost-predictor published (prices, output profiles): a
    decision does not ask it anything."""
    assert stack.system is not None
    async with RoutewiseClient(stack.settings) as rw:
        run_on_system(stack, stack.system.stop("cost_predictor"))
        try:
            outcome = await rw.submit_task(a_task(), wait=10)
        finally:
            run_on_system(stack, stack.system.start("cost_predictor"))
        assert isinstance(outcome, ModelSelected) and outcome.price_table is not None


async def test_a_task_whose_dependency_stays_down_is_rejected_as_unavailable_at_its_deadline(
    stack: RunningStack,
) -> None:
    assert stack.system is not None
    async with RoutewiseClient(stack.settings) as rw:
        before = await dead_letters(rw)
        run_on_system(stack, stack.system.stop("budget_enforcer"))
        try:
            started = time.monotonic()
            outcome = await rw.submit_task(a_task(), wait=DEADLINE_S + 20)
            waited = time.monotonic() - started
        finally:
            run_on_system(stack, stack.system.start("budget_enforcer"))
        assert isinstance(outcome, TaskRejected) and outcome.reason is RejectionReason.unavailable
        assert "decision deadline (6 s)" in outcome.detail and "budget.reserve" in outcome.detail
        assert DEADLINE_S - 1 <= waited <= DEADLINE_S + 6
        assert await dead_letters(rw) == before

        async def answered_again() -> ModelSelected | None:
            again = await rw.submit_task(a_task(), wait=10)
            return again if isinstance(again, ModelSelected) else None

        await eventually(answered_again, timeout=30)  # and the next task is decided as usual
