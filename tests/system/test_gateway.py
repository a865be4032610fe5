"""The gateway end to end: the official ``openai`` SDK against its HTTP API on a real uvicorn, the
five services in this process on a real NATS and Postgres, the mock provider as every provider.

Costs are read where the rest of Routewise reads them: the CostRecorded events on the bus."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import httpx
import nats
import openai
import pytest
from genai_prices import Usage, calc_price

from routewise.contracts.catalog import default_catalog
from routewise.contracts.events import CostRecorded, FeedbackRecorded
from routewise.contracts.gateway import CreateKey
from routewise.dev.mock_provider import MockProvider
from routewise.services.gateway import keys
from routewise.services.gateway import repository as repo
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import eventually

CATALOG = default_catalog()
PROMPT = [{"role": "user", "content": "What is the capital of France? One word."}]
MICRO = Decimal("0.000001")


@dataclass
class Gateway:
    stack: RunningStack
    url: str
    mock: MockProvider

    def run(self, coro: Any) -> Any:
        system = self.stack.system
        assert system is not None and system.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, system.loop).result(30)

    def key(self, org: str) -> str:
        """A new API key charging ``org`` (made as ``routewise keys create`` makes it)."""
        deps = self.stack.system.deps("gateway")  # type: ignore[union-attr]

        async def create() -> str:
            async with deps.transaction() as uow:
                created = await keys.insert_key(uow.conn, CreateKey(scope=f"org:{org}", actor="test"), deps.clock())
            return created.key

        result: str = self.run(create())
        return result

    def client(self, org: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key(org), max_retries=0, timeout=30)

    def attempts(self, task_id: str) -> list[repo.Attempt]:
        deps = self.stack.system.deps("gateway")  # type: ignore[union-attr]

        async def read() -> list[repo.Attempt]:
            async with deps.pool.acquire() as conn:
                return await repo.attempts_of(conn, uuid.UUID(task_id))

        found: list[repo.Attempt] = self.run(read())
        return found


@contextmanager
def serving(
    nats_url: str, database: Database, mock: MockProvider, extra_env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """The services in this process, the gateway's HTTP on a real uvicorn, every provider at ``mock``."""
    env = {"ROUTEWISE_PROVIDER_BASE_URL": mock.openai_base_url, **(extra_env or {})}
    with in_process_stack(nats_url, database, extra_env=env) as stack:
        system = stack.system
        assert system is not None and system.loop is not None
        url = asyncio.run_coroutine_threadsafe(system.serve_http("gateway"), system.loop).result(30)
        yield Gateway(stack, url, mock)


@pytest.fixture(scope="module")
def gateway(nats_url: str, database: Database) -> Iterator[Gateway]:
    with MockProvider(seed=7) as mock, serving(nats_url, database, mock) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _no_faults_left(gateway: Gateway) -> Iterator[None]:
    gateway.mock.clear_faults()
    yield
    gateway.mock.clear_faults()


def costs_of(gateway: Gateway, task_id: str, count: int) -> list[dict[str, Any]]:
    """The task's CostRecorded events as the bus stores them (the events stream), in order."""

    async def read() -> list[dict[str, Any]]:
        nc = await nats.connect(gateway.stack.nats_url)
        try:
            js = nc.jetstream()
            subject = gateway.stack.settings.subjects.of(CostRecorded)  # every org's
            found: list[dict[str, Any]] = []

            async def collect() -> list[dict[str, Any]] | None:
                sub = await js.subscribe(subject, ordered_consumer=True)
                found.clear()
                try:
                    while True:
                        try:
                            msg = await sub.next_msg(timeout=0.5)
                        except nats.errors.TimeoutError:
                            break
                        payload = json.loads(msg.data)
                        if payload["task_id"] == task_id:
                            found.append(payload)
                finally:
                    await sub.unsubscribe()
                return list(found) if len(found) >= count else None

            result: list[dict[str, Any]] = await eventually(collect, timeout=15)
            return result
        finally:
            await nc.close()

    return asyncio.run(read())


def genai_price(model: str, usage: dict[str, Any]) -> Decimal:
    """genai-prices' own price of the usage a provider reported (not the gateway's code)."""
    entry = CATALOG.require(model)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    price = calc_price(
        Usage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            cache_read_tokens=cached or None,
        ),
        model_ref=entry.price_id,
        provider_id=entry.provider,
    )
    return Decimal(str(price.total_price))


def micro(amount: Decimal | str) -> Decimal:
    return Decimal(amount).quantize(MICRO, rounding=ROUND_HALF_UP)


def test_a_routed_completion_answers_with_the_model_that_answered_and_its_exact_cost(gateway: Gateway) -> None:
    client = gateway.client(f"routed-{uuid.uuid4().hex[:8]}")

    raw = client.chat.completions.with_raw_response.create(model="routewise/auto", messages=PROMPT)
    answer = raw.parse()

    headers = raw.headers
    task_id = headers["x-routewise-task-id"]
    assert answer.model == headers["x-routewise-model"] and CATALOG.get(answer.model) is not None
    assert headers["x-routewise-tier"] == CATALOG.require(answer.model).tier.value
    assert headers["x-routewise-strategy"] == "complexity" and headers["x-routewise-cache"] == "off"  # not opted in
    assert len(headers["x-routewise-trace-id"]) == 32
    assert answer.choices[0].message.content and answer.usage is not None
    [cost] = costs_of(gateway, task_id, 1)
    expected = genai_price(answer.model, answer.usage.model_dump())
    assert cost["success"] is True and cost["model"] == answer.model
    assert (cost["input_tokens"], cost["output_tokens"]) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert micro(cost["cost_usd"]) == micro(expected) > 0
    assert Decimal(headers["x-routewise-cost-usd"]) == Decimal(cost["cost_usd"])
    [attempt] = gateway.attempts(task_id)
    assert attempt.ok and attempt.model == answer.model and attempt.usage_source == "provider"


def test_a_stream_is_relayed_and_priced_from_its_final_usage_chunk(gateway: Gateway) -> None:
    client = gateway.client(f"stream-{uuid.uuid4().hex[:8]}")

    with client.chat.completions.with_streaming_response.create(
        model="routewise/auto", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    ) as raw:
        task_id = raw.headers["x-routewise-task-id"]
        chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in chunks if c.usage is not None)
    model = chunks[0].model
    assert text and all(c.model == model for c in chunks)
    [cost] = costs_of(gateway, task_id, 1)
    assert micro(cost["cost_usd"]) == micro(genai_price(model, usage.model_dump())) > 0
    [attempt] = gateway.attempts(task_id)
    assert attempt.stream and attempt.ttft_ms is not None and attempt.usage_source == "provider"
    assert attempt.output_tokens == usage.completion_tokens


def test_a_forced_model_runs_on_that_model_and_is_recorded(gateway: Gateway) -> None:
    client = gateway.client(f"forced-{uuid.uuid4().hex[:8]}")

    raw = client.chat.completions.with_raw_response.create(model="claude-haiku-4-5", messages=PROMPT, max_tokens=50)
    answer = raw.parse()

    assert answer.model == raw.headers["x-routewise-model"] == "claude-haiku-4-5"
    assert answer.usage is not None and answer.usage.completion_tokens <= 50
    [cost] = costs_of(gateway, raw.headers["x-routewise-task-id"], 1)
    assert cost["model"] == "claude-haiku-4-5" and cost["provider"] == "anthropic"
    assert gateway.mock.calls(model="claude-haiku-4-5")


def test_models_lists_the_routed_names_and_the_catalog(gateway: Gateway) -> None:
    ids = [m.id for m in gateway.client("models").models.list()]

    assert ids[0] == "routewise/auto"
    assert {m.id for m in CATALOG.models} <= set(ids)


def test_a_budget_rejection_is_the_sdks_error_with_status_402_and_the_budget(gateway: Gateway) -> None:
    org = f"broke-{uuid.uuid4().hex[:8]}"
    created = gateway.stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", "0.000001", "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    budget_id = json.loads(created.stdout)["id"]

    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client(org).chat.completions.create(model="routewise/auto", messages=PROMPT)

    assert refused.value.status_code == 402
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["code"] == "budget_exhausted" and body["reason"] == "budget_exhausted"
    assert body["budget_id"] == budget_id


def test_a_call_without_a_valid_key_is_the_sdks_authentication_error(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-not-a-routewise-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="routewise/auto", messages=PROMPT)

    assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize("status", [500, 429])
def test_a_retryable_failure_falls_back_to_the_next_model(gateway: Gateway, status: int) -> None:
    client = gateway.client(f"fallback-{status}-{uuid.uuid4().hex[:8]}")
    gateway.mock.add_fault("*", status=status, times=1)  # the first call, whichever model it is for

    raw = client.chat.completions.with_raw_response.create(model="routewise/auto", messages=PROMPT)
    answer = raw.parse()

    task_id = raw.headers["x-routewise-task-id"]
    failed, answered = gateway.attempts(task_id)
    assert not failed.ok and failed.http_status == status and failed.retryable
    assert failed.error_type == ("rate_limited" if status == 429 else "server_error")
    assert answered.ok and answered.model == answer.model != failed.model
    assert raw.headers["x-routewise-attempts"] == "2"
    costs = costs_of(gateway, task_id, 2)
    assert [c["success"] for c in costs] == [False, True]
    assert costs[0]["model"] == failed.model and costs[0]["error_type"] == failed.error_type
    # spend: the answer's cost plus what the failed call reported (the mock reports nothing with an error)
    assert answer.usage is not None
    total = sum(Decimal(c["cost_usd"]) for c in costs)
    assert micro(total) == micro(genai_price(answer.model, answer.usage.model_dump()))
    assert Decimal(raw.headers["x-routewise-cost-usd"]) == total


def test_a_provider_400_is_returned_as_said_and_not_retried(gateway: Gateway) -> None:
    client = gateway.client(f"bad-{uuid.uuid4().hex[:8]}")
    gateway.mock.add_fault("*", status=400, times=1)

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="routewise/auto", messages=PROMPT)

    task_id = refused.value.response.headers["x-routewise-task-id"]
    [attempt] = gateway.attempts(task_id)
    assert attempt.http_status == 400 and not attempt.retryable and not attempt.ok


def test_feedback_is_recorded_for_the_model_that_answered(gateway: Gateway) -> None:
    org = f"feedback-{uuid.uuid4().hex[:8]}"
    key = gateway.key(org)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="routewise/auto", messages=PROMPT)
    task_id = raw.headers["x-routewise-task-id"]

    sent = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"task_id": task_id, "quality": 0.9},
        headers={"Authorization": f"Bearer {key}"},
    )
    other = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"task_id": task_id, "quality": 0.1},
        headers={"Authorization": f"Bearer {gateway.key('someone-else')}"},
    )

    assert sent.status_code == 202, sent.text
    assert other.status_code == 404  # another org's task is not theirs to rate
    feedback = feedback_of(gateway, task_id)
    assert feedback["model"] == raw.parse().model and feedback["quality"] == 0.9
    assert feedback["scope"]["org_id"] == org


def feedback_of(gateway: Gateway, task_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        nc = await nats.connect(gateway.stack.nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe(gateway.stack.settings.subjects.of(FeedbackRecorded), ordered_consumer=True)
            while True:
                msg = await sub.next_msg(timeout=10)
                payload: dict[str, Any] = json.loads(msg.data)
                if payload["task_id"] == task_id:
                    return payload
        finally:
            await nc.close()

    return asyncio.run(read())


def test_the_call_joins_the_callers_trace_with_its_decision_and_is_counted(gateway: Gateway) -> None:
    from prometheus_client import generate_latest

    from routewise.client import RoutewiseClient
    from routewise.contracts.routing import Decision, GetDecision

    trace_id = uuid.uuid4().hex
    client = gateway.client(f"traced-{uuid.uuid4().hex[:8]}")

    raw = client.chat.completions.with_raw_response.create(
        model="routewise/auto", messages=PROMPT, extra_headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"}
    )

    assert raw.headers["x-routewise-trace-id"] == trace_id

    async def decision() -> Decision:
        async with RoutewiseClient(gateway.stack.settings) as rw:
            task_id = uuid.UUID(raw.headers["x-routewise-task-id"])
            return await rw.request(rw.subjects.routing_decision, GetDecision(task_id=task_id), Decision)

    assert trace_id in asyncio.run(decision()).trace_context["traceparent"]  # the selector decided in it
    system = gateway.stack.system
    assert system is not None
    meters = generate_latest(system.runtimes["gateway"][0].registry).decode()
    assert 'routewise_gateway_requests_total{route="/v1/chat/completions",status="200"}' in meters
    assert 'routewise_gateway_attempts_total{outcome="ok",provider=' in meters


def test_a_stream_its_client_leaves_is_stopped_and_charged_what_the_tokenizer_counts(gateway: Gateway) -> None:
    from routewise.services.gateway.providers import build_registry, load_configs

    deps = gateway.stack.system.deps("gateway")  # type: ignore[union-attr]
    usual = deps.registry
    with MockProvider(seed=3, per_token_ms=20, chunk_tokens=1, output_median=400, output_sigma=0.01) as slow:
        configs = load_configs(None, slow.openai_base_url, (m.provider for m in CATALOG.models))
        deps.registry = build_registry(configs, 30)  # every provider now streams a token per 20 ms
        try:
            client = gateway.client(f"gone-{uuid.uuid4().hex[:8]}")
            with client.chat.completions.with_streaming_response.create(
                model="routewise/auto", messages=PROMPT, stream=True, max_tokens=1000
            ) as raw:
                task_id = raw.headers["x-routewise-task-id"]
                for i, _ in enumerate(raw.parse()):
                    if i == 5:
                        break  # the client goes away a few tokens in

            async def recorded() -> list[repo.Attempt] | None:
                async with deps.pool.acquire() as conn:
                    return await repo.attempts_of(conn, uuid.UUID(task_id)) or None

            [attempt] = gateway.run(eventually(recorded, timeout=10))
        finally:
            deps.registry = usual
        assert attempt.ok and attempt.usage_source == "tokenizer"
        assert 5 <= (attempt.output_tokens or 0) < 400  # what was relayed, not the whole answer
        [cost] = costs_of(gateway, task_id, 1)
        assert cost["output_tokens"] == attempt.output_tokens and Decimal(cost["cost_usd"]) > 0

        async def provider_cut_off() -> bool:
            return [c["outcome"] for c in slow.calls()] == ["disconnected"]  # the provider's stream stopped too

        assert asyncio.run(eventually(provider_cut_off, timeout=10))


@pytest.mark.parametrize(
    ("stream", "fault"),
    [(False, {"no_usage": True}), (True, {"no_usage": True}), (True, {"cut_after_tokens": 7})],
    ids=["plain", "stream", "stream-cut-short"],
)
def test_an_answer_without_usage_is_charged_what_the_tokenizer_counts(
    gateway: Gateway, stream: bool, fault: dict[str, Any]
) -> None:
    from routewise.runtime.tokens import count_tokens, encoding_for_model

    client = gateway.client(f"no-usage-{uuid.uuid4().hex[:8]}")
    gateway.mock.add_fault("*", status=None, **fault)

    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="routewise/auto", messages=PROMPT, stream=True, stream_options={"include_usage": True}
        ) as raw:
            task_id, model = raw.headers["x-routewise-task-id"], raw.headers["x-routewise-model"]
            assert all(c.usage is None for c in raw.parse())
    else:
        plain = client.chat.completions.with_raw_response.create(model="routewise/auto", messages=PROMPT)
        task_id, model = plain.headers["x-routewise-task-id"], plain.headers["x-routewise-model"]
        assert plain.parse().usage is None

    [call] = [c for c in gateway.mock.calls(model=model) if c["usage"] is None and c["stream"] == stream][-1:]
    [attempt] = gateway.attempts(task_id)
    entry = CATALOG.require(model)
    expected_input = count_tokens(
        None,
        [_Message(m["role"], m["content"]) for m in PROMPT],
        encoding_for_model(entry.provider, model)[0],
    )
    assert attempt.usage_source == "tokenizer"
    assert (attempt.input_tokens, attempt.output_tokens) == (expected_input, call["tokens_sent"])
    [cost] = costs_of(gateway, task_id, 1)
    reported = {"prompt_tokens": expected_input, "completion_tokens": call["tokens_sent"]}
    assert micro(cost["cost_usd"]) == micro(genai_price(model, reported)) > 0


@dataclass(frozen=True)
class _Message:
    role: str
    content: str


def test_a_fallback_holds_for_itself_and_every_hold_is_settled_by_its_own_cost(gateway: Gateway) -> None:
    from routewise.client import RoutewiseClient
    from routewise.contracts.budget import BudgetStatus, GetBudgetStatus

    org = f"held-{uuid.uuid4().hex[:8]}"
    created = gateway.stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", "5", "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    gateway.mock.add_fault("*", status=503, times=1)

    raw = gateway.client(org).chat.completions.with_raw_response.create(
        model="routewise/auto", messages=PROMPT, max_tokens=300
    )

    task_id = raw.headers["x-routewise-task-id"]
    costs = costs_of(gateway, task_id, 2)
    assert [(c["attempt"], c["success"]) for c in costs] == [(1, False), (2, True)]
    spent = sum(Decimal(c["cost_usd"]) for c in costs)

    async def settled() -> BudgetStatus | None:
        async with RoutewiseClient(gateway.stack.settings) as rw:
            status = await rw.request(
                rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
            )
        budget = status.budgets[0]
        return status if budget.reserved_usd == 0 and budget.current_spend_usd == spent else None

    assert asyncio.run(eventually(settled, timeout=15))  # no hold left behind, spend exactly the costs

    async def holds() -> list[tuple[int, str, str]]:
        conn = await asyncpg.connect(gateway.stack.database.admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT attempt, model, status FROM budget_enforcer.reservations WHERE task_id = $1 ORDER BY attempt",
                uuid.UUID(task_id),
            )
        finally:
            await conn.close()
        return [(r["attempt"], r["model"], r["status"]) for r in rows]

    first, second = asyncio.run(holds())
    assert first == (1, costs[0]["model"], "settled")
    assert second == (2, costs[1]["model"], "settled")  # the fallback held for its own model first


def test_knobs_from_headers_and_the_body_steer_the_decision(gateway: Gateway) -> None:
    client = gateway.client(f"knobs-{uuid.uuid4().hex[:8]}")

    by_header = client.chat.completions.with_raw_response.create(
        model="routewise/auto", messages=PROMPT, extra_headers={"X-Routewise-Allowed-Providers": "anthropic"}
    )
    by_body = client.chat.completions.create(
        model="routewise/auto", messages=PROMPT, extra_body={"routewise": {"allowed_providers": ["google"]}}
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="routewise/auto", messages=PROMPT, extra_headers={"X-Routewise-Quality-Bias": "3"}
        )

    assert CATALOG.require(by_header.parse().model).provider == "anthropic"
    assert CATALOG.require(by_body.model).provider == "google"
    assert refused.value.code == "invalid_request" and "quality_bias" in refused.value.message
