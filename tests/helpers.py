"""Small test helpers: polling instead of sleeping."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from faststream.nats import NatsBroker, NatsRouter
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import CostRecorded, Event, ModelSelected, Scope, Tier
from routewise.runtime.bus import consume
from routewise.runtime.service import build_broker
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams

if TYPE_CHECKING:
    from tests.conftest import RunningStack

T = TypeVar("T")
E = TypeVar("E", bound=Event)


class Clock:
    """An injected clock a test moves by hand (``clock.now = ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def an_outcome(
    scope: Scope,
    model: str,
    *,
    latency: float | None = 1000.0,
    output: int = 100,
    cost: str = "0.01",
    error: str | None = None,
    task_type: str = "normal",
    task_id: uuid.UUID | None = None,
    at: datetime | None = None,
) -> CostRecorded:
    """A call of ``model`` (50 tokens in), failed with ``error`` when given: what performance-tracker counts."""
    fields: dict[str, object] = {} if at is None else {"occurred_at": at}
    return CostRecorded(
        task_id=task_id or uuid.uuid4(),
        scope=scope,
        task_type=task_type,
        model=model,
        provider="test",
        input_tokens=50,
        output_tokens=output,
        cost_usd=Decimal(cost),
        latency_ms=latency,
        success=error is None,
        error_type=error,
        **fields,
    )  # type: ignore[arg-type]


def a_selection(scope: Scope, model: str, task_id: uuid.UUID, pattern: str, task_type: str) -> ModelSelected:
    """A decision for ``model`` with this pattern and task type (for consumers that only read those)."""
    return ModelSelected(
        task_id=task_id,
        scope=scope,
        task_type=task_type,
        model=model,
        provider="test",
        tier=Tier.micro,
        estimated_input_tokens=1,
        estimated_output_tokens=1,
        estimated_cost_usd=Decimal(0),
        baseline_model="gpt-4.1",
        baseline_cost_usd=Decimal(0),
        strategy="complexity",
        confidence=1,
        complexity=0.1,
        pattern=pattern,
        reasoning="test",
        decision_latency_ms=1,
    )


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value, and return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {result!r})")
        await asyncio.sleep(interval)


def a_cost(
    scope: Scope,
    amount: str,
    *,
    task_id: uuid.UUID | None = None,
    at: datetime | None = None,
    model: str = "gpt-4o",
    provider: str = "openai",
) -> CostRecorded:
    """A recorded call of ``amount`` USD (one token in, one out) for ``scope``."""
    fields: dict[str, object] = {} if at is None else {"occurred_at": at}
    return CostRecorded(
        task_id=task_id or uuid.uuid4(),
        scope=scope,
        model=model,
        provider=provider,
        input_tokens=1,
        output_tokens=1,
        cost_usd=Decimal(amount),
        **fields,
    )  # type: ignore[arg-type]


async def record_trusted(rw: RoutewiseClient, cost: CostRecorded) -> None:
    """Publish a CostRecorded as the trusted publishers do (the gateway, which prices its calls, and
    cost-predictor, which checked the cost): applied as it is, any amount, for tests of what the
    consumers do with a cost. ``rw.record_cost`` reports it for cost-predictor to check instead."""
    await rw.publish(rw.subjects.event(cost), cost)


async def calls_answering(rw: RoutewiseClient, task_type: str, model: str, median_output: int, n: int = 150) -> None:
    """``n`` recorded calls of ``model`` for ``task_type`` whose output tokens spread (lognormal, a
    fixed seed) around ``median_output``: what teaches cost-predictor the model's output profile."""
    rng = random.Random(3)
    for _ in range(n):
        cost = CostRecorded(
            task_id=uuid.uuid4(),
            scope=Scope(org_id="learn"),
            task_type=task_type,
            model=model,
            provider="openai",
            input_tokens=50,
            output_tokens=round(rng.lognormvariate(math.log(median_output), 0.4)),
            cost_usd=Decimal("0.001"),
        )
        await record_trusted(rw, cost)


def a_call(decision: ModelSelected, input_tokens: int, output_tokens: int, cost: str | Decimal) -> CostRecorded:
    """The call a decision led to: its model, scope and task type, with these tokens and cost."""
    return CostRecorded(
        task_id=decision.task_id,
        scope=decision.scope,
        task_type=decision.task_type,
        model=decision.model,
        provider=decision.provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=Decimal(cost),
    )


async def spend_once_recorded(rw: RoutewiseClient, stack: RunningStack, org: str, costs: int) -> BudgetStatus:
    """budget-enforcer's status for ``org`` once it has applied ``costs`` costs."""

    async def status() -> BudgetStatus | None:
        s = await rw.request(
            stack.settings.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
        )
        return s if s.costs_recorded >= costs else None

    return await eventually(status, timeout=20)


@asynccontextmanager
async def consuming(
    settings: Settings,
    service: str,
    subject: str,
    event_type: type[E],
    handler: Callable[[E], Awaitable[None]],
) -> AsyncIterator[NatsBroker]:
    """One consumer of ``subject`` as ``service`` runs it (the runtime's own consume and broker)."""
    broker = build_broker(settings, service, TracerProvider(), CollectorRegistry())
    router = NatsRouter()
    consume(router, settings, service, subject, event_type, handler)
    broker.include_router(router)
    client = await broker.connect()
    await ensure_streams(client.jetstream(), settings)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
