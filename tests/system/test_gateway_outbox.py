"""The gateway's outbox: a cost committed with its attempt reaches the bus even when the gateway
went down before publishing it. A module of its own: its database is not shared with another
gateway whose outbox relay would publish the row first."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from routewise.dev.mock_provider import MockProvider
from tests.conftest import Database
from tests.system.test_gateway import PROMPT, costs_of, serving


def test_an_answer_whose_cost_the_bus_never_took_is_published_by_the_next_start(
    nats_url: str, database: Database
) -> None:
    """The provider answered and the client got its answer, but the gateway went down before the
    cost reached the bus: the cost was committed with the attempt, in the outbox, and the next
    gateway process publishes it, once."""
    with MockProvider(seed=11) as mock, serving(nats_url, database, mock) as crashing:
        stack = crashing.stack
        system = stack.system
        assert system is not None
        relay = system.runtimes["gateway"][0]._outbox
        assert relay is not None

        async def bus_unreachable(*_: Any, **__: Any) -> None:
            raise ConnectionError("NATS is gone")

        relay._publish = bus_unreachable  # type: ignore[method-assign]
        raw = crashing.client("outbox").chat.completions.with_raw_response.create(
            model="routewise/auto", messages=PROMPT
        )
        assert raw.status_code == 200
        task_id, charged = raw.headers["x-routewise-task-id"], Decimal(raw.headers["x-routewise-cost-usd"])

        async def unpublished() -> int:
            async with system.deps("gateway").pool.acquire() as conn:
                found: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                return found

        assert crashing.run(unpublished()) == 1
        crashing.run(system.stop("gateway"))  # its last flush fails too: the bus is still unreachable
        crashing.run(system.start("gateway"))

        [cost] = costs_of(crashing, task_id, 1)
        assert Decimal(cost["cost_usd"]) == charged > 0
