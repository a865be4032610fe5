"""The gateway's response cache end to end: the official ``openai`` SDK against the gateway on a
real uvicorn, the services in this process on a real NATS and Postgres, the mock provider as every
provider (its calls log shows whether a provider was called at all)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from routewise.contracts.metrics import GetMetricsReport, MetricsReport
from routewise.dev.mock_provider import MockProvider
from routewise.runtime.settings import Settings
from routewise.services.metrics.handlers import report
from tests.conftest import Database
from tests.helpers import eventually
from tests.system.test_gateway import Gateway, costs_of, serving

DEFAULT_ORG = f"cached-by-default-{uuid.uuid4().hex[:8]}"
USE = {"X-Routewise-Cache": "use"}


@pytest.fixture(scope="module")
def gateway(nats_url: str, database: Database) -> Iterator[Gateway]:
    env = {"ROUTEWISE_GATEWAY_CACHE_ORGS": DEFAULT_ORG}
    with MockProvider(seed=11) as mock, serving(nats_url, database, mock, env) as gateway:
        yield gateway


def prompt() -> list[dict[str, str]]:
    """A conversation no other test sends."""
    return [{"role": "user", "content": f"Name a colour. ({uuid.uuid4().hex[:8]})"}]


def ask(client: openai.OpenAI, messages: Any, headers: dict[str, str] | None = None, **params: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="routewise/auto", messages=messages, extra_headers=headers, **params
    )


def provider_calls(gateway: Gateway) -> int:
    return len(gateway.mock.calls())


def test_a_second_identical_request_is_a_hit_at_no_cost_without_a_provider_call(gateway: Gateway) -> None:
    client = gateway.client(f"hits-{uuid.uuid4().hex[:8]}")
    messages = prompt()

    first = ask(client, messages, USE, temperature=0.2, max_tokens=40)
    calls = provider_calls(gateway)
    second = ask(client, messages, USE, temperature=0.2, max_tokens=40)

    assert first.headers["x-routewise-cache"] == "miss" and second.headers["x-routewise-cache"] == "hit"
    assert provider_calls(gateway) == calls  # no provider call for the hit
    one, two = first.parse(), second.parse()
    assert two.choices[0].message.content == one.choices[0].message.content and two.model == one.model
    assert second.headers["x-routewise-cost-usd"] == "0" and second.headers["x-routewise-model"] == one.model
    hit_task = second.headers["x-routewise-task-id"]
    assert hit_task != first.headers["x-routewise-task-id"] and len(second.headers["x-routewise-trace-id"]) == 32
    [paid] = costs_of(gateway, first.headers["x-routewise-task-id"], 1)
    [hit] = costs_of(gateway, hit_task, 1)
    assert hit["cached"] is True and Decimal(hit["cost_usd"]) == 0 and hit["model"] == one.model
    assert Decimal(hit["avoided_cost_usd"]) == Decimal(paid["cost_usd"]) > 0
    assert Decimal(second.headers["x-routewise-cache-avoided-usd"]) == Decimal(paid["cost_usd"])
    # the cached task takes feedback like any other
    answer = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"task_id": hit_task, "quality": 0.9},
        headers={"Authorization": f"Bearer {client.api_key}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text


def test_another_orgs_identical_request_misses(gateway: Gateway) -> None:
    messages = prompt()
    ask(gateway.client(f"one-{uuid.uuid4().hex[:8]}"), messages, USE)
    calls = provider_calls(gateway)

    other = ask(gateway.client(f"two-{uuid.uuid4().hex[:8]}"), messages, USE)

    assert other.headers["x-routewise-cache"] == "miss" and provider_calls(gateway) == calls + 1


def test_a_parameter_that_changes_the_answer_misses(gateway: Gateway) -> None:
    client = gateway.client(f"params-{uuid.uuid4().hex[:8]}")
    messages = prompt()
    ask(client, messages, USE, temperature=0.2)

    warmer = ask(client, messages, USE, temperature=0.9)
    capped = ask(client, messages, USE, temperature=0.2, max_tokens=7)
    same = ask(client, messages, USE, temperature=0.2)

    assert [r.headers["x-routewise-cache"] for r in (warmer, capped, same)] == ["miss", "miss", "hit"]


def test_without_opting_in_nothing_is_cached(gateway: Gateway) -> None:
    client = gateway.client(f"plain-{uuid.uuid4().hex[:8]}")
    messages = prompt()
    calls = provider_calls(gateway)

    first, second = ask(client, messages), ask(client, messages)
    used = ask(client, messages, USE)  # nothing was stored for the two before

    assert [r.headers["x-routewise-cache"] for r in (first, second, used)] == ["off", "off", "miss"]
    assert provider_calls(gateway) == calls + 3


def test_an_org_configured_for_the_cache_uses_it_unless_a_request_says_no(gateway: Gateway) -> None:
    client = gateway.client(DEFAULT_ORG)
    messages = prompt()

    first, second = ask(client, messages), ask(client, messages)
    skipped = ask(client, messages, {"X-Routewise-Cache": "no"})
    by_knob = client.chat.completions.with_raw_response.create(
        model="routewise/auto", messages=messages, extra_body={"routewise": {"cache": False}}
    )

    assert [r.headers["x-routewise-cache"] for r in (first, second, skipped, by_knob)] == ["miss", "hit", "off", "off"]


def test_a_bad_cache_header_is_a_400_naming_it(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(gateway.client("bad-header"), prompt(), {"X-Routewise-Cache": "maybe"})
    assert refused.value.body and "cache" in str(refused.value.body)


def sse(client: openai.OpenAI, messages: Any) -> tuple[Any, list[Any]]:
    with client.chat.completions.with_streaming_response.create(
        model="routewise/auto",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=USE,
    ) as raw:
        return raw.headers, list(raw.parse())


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_streams_hit_the_cache_and_fill_it(gateway: Gateway) -> None:
    org = f"streams-{uuid.uuid4().hex[:8]}"
    client = gateway.client(org)
    plain_first, streamed_first = prompt(), prompt()

    # a plain answer replayed as a stream, with its usage chunk
    stored = ask(client, plain_first, USE).parse()
    calls = provider_calls(gateway)
    headers, chunks = sse(client, plain_first)
    assert headers["x-routewise-cache"] == "hit" and provider_calls(gateway) == calls
    assert text_of(chunks) == stored.choices[0].message.content and chunks[0].model == stored.model
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == stored.usage.completion_tokens

    # a stream relayed to its end is stored: the same stream, then a plain request, hit it
    missed, relayed = sse(client, streamed_first)
    assert missed["x-routewise-cache"] == "miss"
    calls = provider_calls(gateway)

    deps = gateway.stack.system.deps("gateway")  # type: ignore[union-attr]

    async def stored_yet() -> bool:  # the stream's answer is stored once its record is written
        count = await deps.pool.fetchval("SELECT count(*) FROM response_cache WHERE org_id = $1", org)
        return bool(count == 2)  # the plain answer and the stream's

    gateway.run(eventually(stored_yet, timeout=10))
    again, replayed = sse(client, streamed_first)
    plain = ask(client, streamed_first, USE)
    assert again["x-routewise-cache"] == plain.headers["x-routewise-cache"] == "hit"
    assert text_of(replayed) == text_of(relayed) == plain.parse().choices[0].message.content
    assert provider_calls(gateway) == calls


def test_an_answer_expires_after_the_ttl(gateway: Gateway) -> None:
    deps = gateway.stack.system.deps("gateway")  # type: ignore[union-attr]
    settings = deps.settings
    deps.settings = settings.model_copy(update={"gateway_cache_ttl": 0.5})
    try:
        client = gateway.client(f"ttl-{uuid.uuid4().hex[:8]}")
        messages = prompt()
        ask(client, messages, USE)
        time.sleep(0.6)  # the TTL itself: nothing to await but the time passing
        calls = provider_calls(gateway)
        expired = ask(client, messages, USE)
    finally:
        deps.settings = settings

    assert expired.headers["x-routewise-cache"] == "miss" and provider_calls(gateway) == calls + 1


def test_the_metrics_report_counts_the_hit_and_its_avoided_cost(gateway: Gateway) -> None:
    org = f"saved-{uuid.uuid4().hex[:8]}"
    client = gateway.client(org)
    messages = prompt()
    paid = ask(client, messages, USE)
    ask(client, messages, USE)
    ask(client, messages, USE)
    [cost] = costs_of(gateway, paid.headers["x-routewise-task-id"], 1)
    metrics = gateway.stack.system.deps("metrics")  # type: ignore[union-attr]
    request = GetMetricsReport(days=1, scope_type="org", scope_id=org)

    async def counted() -> MetricsReport | None:
        found = await report(request, metrics)
        return found if found.cache.hits == 2 else None

    shown = gateway.run(eventually(counted, timeout=15))

    assert shown.cache.avoided_cost_usd == 2 * Decimal(cost["cost_usd"]) > 0  # exact, as Decimal
    printed = gateway.stack.cli("metrics", "--days", "1", "--scope", f"org:{org}")
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert "2 tasks answered from the gateway's cache at $0" in printed.stdout
    as_json = json.loads(gateway.stack.cli("metrics", "--days", "1", "--scope", f"org:{org}", "--json").stdout)
    assert as_json["cache"]["hits"] == 2
    assert Decimal(as_json["cache"]["avoided_cost_usd"]) == shown.cache.avoided_cost_usd


def test_cache_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEWISE_GATEWAY_CACHE_ORGS", "acme, beta ,")
    monkeypatch.setenv("ROUTEWISE_GATEWAY_CACHE_TTL", "60")

    s = Settings()

    assert s.gateway_cache_orgs == ["acme", "beta"] and s.gateway_cache_ttl == 60
