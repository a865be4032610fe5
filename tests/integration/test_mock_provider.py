"""The mock provider as the gateway sees it: the official ``openai`` SDK against a real uvicorn server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai import AsyncOpenAI

from routewise.contracts.catalog import default_catalog
from routewise.contracts.events import ChatMessage
from routewise.dev.mock_provider import MockProvider, parse_args
from routewise.runtime.tokens import count_text, count_tokens
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[Any] = [
    {"role": "system", "content": "You answer in one short paragraph."},
    {"role": "user", "content": "Why do providers cache long prompts?"},
]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProvider]:
    with MockProvider(seed=11) as provider:
        yield provider


@pytest.fixture
async def client(mock: MockProvider) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=mock.openai_base_url, api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


async def test_a_completion_counts_the_prompt_with_the_project_tokenizer_and_is_deterministic(
    client: AsyncOpenAI,
) -> None:
    first = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=60)
    again = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=60)
    other = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[*MESSAGES[:1], {"role": "user", "content": "And why not short ones?"}]
    )

    assert first.model == "gpt-4o-mini"
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens == count_tokens(None, [ChatMessage(**m) for m in MESSAGES], "o200k_base")
    assert 1 <= first.usage.completion_tokens <= 60
    text = first.choices[0].message.content
    assert text and count_text(text, "o200k_base") == first.usage.completion_tokens
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # a short prompt: nothing cached
    assert (again.usage, again.choices[0].message.content) == (first.usage, text)
    assert other.choices[0].message.content != text


async def test_a_stream_with_usage_tells_the_same_answer_as_a_plain_call(client: AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES, max_tokens=500)
    stream = await client.chat.completions.create(
        model="claude-haiku-4-5",
        messages=MESSAGES,
        max_tokens=500,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len(chunks) > 3 and all(c.model == "claude-haiku-4-5" for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.choices == [] and last.usage == plain.usage

    without = await client.chat.completions.create(
        model="claude-haiku-4-5", messages=MESSAGES, max_tokens=500, stream=True
    )
    assert {c.usage async for c in without} == {None}  # no usage chunk unless asked for


async def test_full_length_answers_exactly_max_tokens(client: AsyncOpenAI) -> None:
    full = await client.chat.completions.create(
        model="gpt-5-mini", messages=MESSAGES, max_tokens=777, extra_headers={"X-Mock-Full-Length": "1"}
    )
    assert full.usage is not None and full.usage.completion_tokens == 777
    assert full.choices[0].finish_reason == "length"
    assert count_text(full.choices[0].message.content or "", "o200k_base") == 777

    newer = await client.chat.completions.create(
        model="gpt-5-mini",
        messages=MESSAGES,
        max_completion_tokens=33,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Mock-Full-Length": "true"},
    )
    usage = [c.usage async for c in newer if c.usage]
    assert [u.completion_tokens for u in usage] == [33]


async def test_a_long_prompt_reports_a_cached_share(client: AsyncOpenAI) -> None:
    long = [{"role": "system", "content": "Follow the house style guide closely. " * 400}, MESSAGES[1]]
    answer = await client.chat.completions.create(model="gpt-4.1", messages=long, max_tokens=10)
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens or 0
    assert usage.prompt_tokens > 2048
    assert 1024 <= cached <= usage.prompt_tokens and cached % 128 == 0
    assert cached >= usage.prompt_tokens // 2 - 128


async def test_scripted_faults_fail_the_next_calls_for_a_model_with_openai_errors(
    mock: MockProvider, client: AsyncOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        assert (await http.post("/mock/faults", json={"model": "gpt-4o", "status": 500})).status_code == 201
        posted = await http.post("/mock/faults", json={"model": "gpt-4o", "status": 429, "retry_after_s": 2})
        assert posted.status_code == 201
        assert [f["status"] for f in (await http.get("/mock/faults")).json()["data"]] == [500, 429]

        other = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert other.model == "gpt-4o-mini"  # another model is not affected
        with pytest.raises(openai.InternalServerError) as server_error:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as rate_limited:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        answered = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

        assert server_error.value.status_code == 500
        assert server_error.value.type == "server_error"
        assert rate_limited.value.code == "rate_limit_exceeded"
        assert rate_limited.value.response.headers["retry-after"] == "2"
        assert answered.usage is not None
        calls = (await http.get("/mock/calls", params={"model": "gpt-4o"})).json()["data"]
        assert [(c["status"], c["outcome"], c["stream"]) for c in calls] == [
            (500, "failed", False),
            (429, "failed", True),
            (200, "answered", False),
        ]
        assert [c["usage"] is None for c in calls] == [True, True, False]
        assert calls[2]["usage"]["completion_tokens"] == answered.usage.completion_tokens
        assert calls[2]["key_suffix"] == "hing"

        await http.post("/mock/faults", json={"model": "*", "status": 503, "times": 5})
        assert (await http.delete("/mock/faults")).json() == {"cleared": 1}
        assert (await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)).usage is not None


async def test_a_delay_fault_makes_a_call_time_out(mock: MockProvider, client: AsyncOpenAI) -> None:
    mock.add_fault(model="slow-model", status=None, delay_ms=400)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="slow-model", messages=MESSAGES, timeout=0.1)
    assert (await client.chat.completions.create(model="slow-model", messages=MESSAGES, timeout=2)).usage


async def test_faults_that_cut_a_stream_or_drop_its_usage(mock: MockProvider, client: AsyncOpenAI) -> None:
    ask: dict[str, Any] = {"model": "gpt-5-nano", "messages": MESSAGES, "max_tokens": 400}
    whole = await client.chat.completions.create(**ask, extra_headers={"X-Mock-Full-Length": "1"})
    mock.add_fault("gpt-5-nano", status=None, cut_after_tokens=25)
    mock.add_fault("gpt-5-nano", status=None, no_usage=True)
    mock.add_fault("gpt-5-nano", status=None, no_usage=True)
    usage = {"stream": True, "stream_options": {"include_usage": True}, "extra_headers": {"X-Mock-Full-Length": "1"}}

    cut = [c async for c in await client.chat.completions.create(**ask, **usage)]
    text = "".join(c.choices[0].delta.content or "" for c in cut if c.choices)
    assert count_text(text, "o200k_base") == 25
    assert (whole.choices[0].message.content or "").startswith(text)  # the same answer, cut short
    assert all(c.usage is None and (not c.choices or c.choices[0].finish_reason is None) for c in cut)
    silent = [c async for c in await client.chat.completions.create(**ask, **usage)]
    assert silent[-1].choices and silent[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in silent)
    assert (await client.chat.completions.create(**ask)).usage is None

    calls = mock.calls("gpt-5-nano")[-3:]
    assert [(c["outcome"], c["tokens_sent"], c["usage"]) for c in calls] == [
        ("cut", 25, None),
        ("completed", 400, None),
        ("answered", calls[2]["tokens_sent"], None),
    ]


async def test_latency_and_a_stream_the_client_leaves() -> None:
    full = {"X-Mock-Full-Length": "1"}
    with MockProvider(latency_ms=150, per_token_ms=10, chunk_tokens=1) as mock:
        async with AsyncOpenAI(base_url=mock.openai_base_url, api_key="k", max_retries=0) as sdk:
            started = time.monotonic()
            await sdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5, extra_headers=full)
            assert time.monotonic() - started >= 0.15 + 5 * 0.01
            started = time.monotonic()
            stream = await sdk.chat.completions.create(
                model="m", messages=MESSAGES, max_tokens=300, stream=True, extra_headers=full
            )
            async for _ in stream:
                assert time.monotonic() - started >= 0.15  # the time to first token
                break
            await stream.close()

        async def left() -> bool:
            return [c["outcome"] for c in mock.calls("m") if c["stream"]] == ["disconnected"]

        await eventually(left, timeout=5)


async def test_seeded_error_and_429_rates_repeat_with_the_seed() -> None:
    async def outcomes() -> list[int]:
        statuses = []
        with MockProvider(seed=5, error_rate=0.3, rate_limit_rate=0.3) as mock:
            async with AsyncOpenAI(base_url=mock.openai_base_url, api_key="k", max_retries=0) as sdk:
                for _ in range(24):
                    try:
                        await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
                        statuses.append(200)
                    except openai.APIStatusError as exc:
                        statuses.append(exc.status_code)
        return statuses

    first = await outcomes()
    assert set(first) == {200, 429, 500}
    assert await outcomes() == first


async def test_models_lists_the_catalog_and_answers_any_name(client: AsyncOpenAI) -> None:
    listed = [m.id async for m in client.models.list()]
    assert listed == [m.id for m in default_catalog().models]
    assert (await client.models.retrieve("some-provider/any-model")).id == "some-provider/any-model"


async def test_a_required_key_refuses_others_with_401() -> None:
    with MockProvider(api_key="sk-right") as mock:
        async with AsyncOpenAI(base_url=mock.openai_base_url, api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as refused:
                await wrong.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()
        async with AsyncOpenAI(base_url=mock.openai_base_url, api_key="sk-right", max_retries=0) as right:
            assert (await right.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)).usage
    assert refused.value.code == "invalid_api_key"
    assert refused.value.type == "invalid_request_error"


async def test_invalid_requests_are_400_with_openai_errors(mock: MockProvider, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert empty.value.param == "messages"
    async with httpx.AsyncClient(base_url=mock.url) as http:
        for body in (b"{not json", b"[1, 2]", b'{"model": "gpt-4o-mini"}', b'{"model": "m", "messages": 3}'):
            answer = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400, body
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        assert (await http.post("/mock/faults", json={"status": 200})).status_code == 400
        assert (await http.post("/mock/faults", json={"model": "gpt-4o"})).status_code == 400  # does nothing
        missing = await http.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_the_command_line_and_the_compose_service() -> None:
    _, settings = parse_args(["--seed", "3", "--error-rate", "0.1", "--models", "a, b"])
    assert (settings.seed, settings.error_rate, settings.models) == (3, 0.1, ("a", "b"))
    with pytest.raises(SystemExit):
        parse_args(["--error-rate", "0.7", "--rate-limit-rate", "0.5"])
    with pytest.raises(SystemExit):
        parse_args(["--latency-ms", "nan"])

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mock-provider"]
    assert compose["profiles"] == ["mock"]  # only with `docker compose --profile mock`
    assert compose["build"]["dockerfile"] == "deploy/Dockerfile"
    assert compose["command"][:3] == ["python", "-m", "routewise.dev.mock_provider"]
    args, _ = parse_args(compose["command"][3:])
    assert args.host == "0.0.0.0"
    assert f"localhost:{args.port}/mock/health" in " ".join(compose["healthcheck"]["test"])
