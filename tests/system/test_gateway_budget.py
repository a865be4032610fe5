"""A hard budget holds for real spend through the gateway: 200 concurrent requests on $0.05, the
mock provider answering every one at its full ``max_tokens``. A module of its own: its own mock
(full length) and its own database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.dev.mock_provider import MockProvider
from tests.conftest import Database, RunningStack
from tests.helpers import eventually
from tests.system.test_gateway import PROMPT, Gateway, serving

LIMIT = Decimal("0.05")
REQUESTS = 200
MAX_TOKENS = 1000


@pytest.fixture(scope="module")
def gateway(nats_url: str, database: Database) -> Iterator[Gateway]:
    with MockProvider(seed=5, full_length=True) as mock, serving(nats_url, database, mock) as gateway:
        yield gateway


async def status_of(stack: RunningStack, org: str) -> BudgetStatus:
    async with RoutewiseClient(stack.settings) as rw:
        return await rw.request(
            rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
        )


def test_200_concurrent_calls_at_full_max_tokens_never_spend_past_a_hard_limit(gateway: Gateway) -> None:
    org = f"hard-{uuid.uuid4().hex[:8]}"
    created = gateway.stack.cli(
        "budgets", "create", "--scope", f"org:{org}", "--limit", str(LIMIT), "--threshold", "100:notify", "--json"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key(org), max_retries=0, timeout=120)

    async def one() -> tuple[int, Decimal]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="routewise/auto", messages=PROMPT, max_tokens=MAX_TOKENS
            )
        except openai.APIStatusError as exc:
            return exc.status_code, Decimal(0)
        answer = raw.parse()
        assert answer.usage is not None and answer.usage.completion_tokens == MAX_TOKENS  # the worst case, every time
        return 200, Decimal(raw.headers["x-routewise-cost-usd"])

    async def burst() -> list[tuple[int, Decimal]]:
        try:
            return await asyncio.gather(*(one() for _ in range(REQUESTS)))
        finally:
            await client.close()

    outcomes = asyncio.run(burst())

    assert {status for status, _ in outcomes} == {200, 402}  # answered, or refused as budget_exhausted
    admitted = [cost for status, cost in outcomes if status == 200]
    charged = sum(admitted, Decimal(0))

    async def settled() -> BudgetStatus | None:
        status = await status_of(gateway.stack, org)
        budget = status.budgets[0]
        return status if budget.reserved_usd == 0 and budget.current_spend_usd == charged else None

    final = asyncio.run(eventually(settled, timeout=30)).budgets[0]
    largest = max(admitted)
    report = {
        "requests": REQUESTS,
        "admitted": len(admitted),
        "admitted_fraction": round(len(admitted) / REQUESTS, 3),
        "spend_usd": str(final.current_spend_usd),
        "limit_usd": str(LIMIT),
        "spend_fraction_of_limit": float(final.current_spend_usd / LIMIT),
        "one_call_usd": str(largest),
    }
    print(json.dumps(report))
    assert final.current_spend_usd <= LIMIT  # never past the hard limit
    assert final.current_spend_usd > LIMIT - 2 * largest  # and not needlessly low: at most a call or two left unspent
    assert 0 < len(admitted) < REQUESTS
