"""Delivery guarantees of the shared consumer, against a real NATS JetStream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import nats
import pytest
from faststream.nats import NatsBroker, NatsRouter
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from routewise.client.wire import msg_id_headers
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import CostRecorded, Scope
from routewise.contracts.subjects import durable
from routewise.runtime.bus import (
    HEADER_DELIVERIES,
    HEADER_REASON,
    HEADER_SUBJECT,
    reply,
)
from routewise.runtime.service import build_broker
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams
from tests.helpers import consuming, eventually


def a_cost(**overrides: object) -> CostRecorded:
    fields: dict[str, object] = {
        "task_id": uuid.uuid4(),
        "scope": Scope(org_id="acme"),
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 50,
        "cost_usd": "0.00075",
    }
    fields.update(overrides)
    return CostRecorded.model_validate(fields)


def consumer(
    settings: Settings, handler: Callable[[CostRecorded], Awaitable[None]]
) -> AbstractAsyncContextManager[NatsBroker]:
    return consuming(settings, "testsvc", settings.subjects.of(CostRecorded), CostRecorded, handler)


async def publish_raw(settings: Settings, data: bytes, msg_id: str, org: str = "acme") -> None:
    """``data`` as it is, on ``org``'s cost subject."""
    nc = await nats.connect(settings.nats_url)
    try:
        subject = settings.subjects.for_org("cost_recorded", org)
        await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def dead_letters(settings: Settings) -> list[nats.aio.msg.Msg]:
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            settings.subjects.dead_letter("testsvc"),
            stream=settings.subjects.dead_letter_stream.name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            ordered_consumer=True,
        )
        found = []
        while True:
            try:
                found.append(await sub.next_msg(timeout=0.5))
            except nats.errors.TimeoutError:
                return found
    finally:
        await nc.close()


async def test_a_transient_failure_is_retried_until_it_succeeds(settings: Settings) -> None:
    attempts: list[uuid.UUID] = []
    done = asyncio.Event()

    async def flaky(event: CostRecorded) -> None:
        attempts.append(event.event_id)
        if len(attempts) < 3:
            raise ConnectionError("database briefly unavailable")
        done.set()

    async with consumer(settings, flaky) as broker:
        event = a_cost()
        await broker.publish(
            event.model_dump_json().encode(),
            settings.subjects.event(event),
            headers=msg_id_headers(event),
            stream=settings.subjects.events_stream.name,
        )
        await asyncio.wait_for(done.wait(), timeout=10)
    assert attempts == [event.event_id] * 3  # max_deliver is 3: the third delivery succeeded
    assert await dead_letters(settings) == []


def raise_runtime_error() -> None:
    raise RuntimeError("bug in handler")


def raise_validation_error() -> None:
    # a bug that builds an invalid model is not a malformed message: it is retried like any failure
    Scope(org_id="bug in handler")


@pytest.mark.parametrize("failure", [raise_runtime_error, raise_validation_error])
async def test_a_message_that_keeps_failing_is_dead_lettered_after_max_deliver(
    settings: Settings, failure: Callable[[], None]
) -> None:
    attempts = 0

    async def broken(event: CostRecorded) -> None:
        nonlocal attempts
        attempts += 1
        failure()

    async with consumer(settings, broken):
        event = a_cost()
        await publish_raw(settings, event.model_dump_json().encode(), str(event.event_id))
        letters = await eventually(lambda: dead_letters(settings), timeout=15)
    assert attempts == settings.max_deliver
    (letter,) = letters
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "max_deliver_exceeded"
    assert letter.headers[HEADER_DELIVERIES] == str(settings.max_deliver)
    assert "bug in handler" in letter.headers["Routewise-DeadLetter-Error"]
    assert CostRecorded.model_validate_json(letter.data) == event


@pytest.mark.parametrize(
    ("payload", "expected_error"),
    [
        (b"{not json", "json_invalid"),
        (b'{"task_id": "not-a-uuid"}', "uuid"),
        (b'{"unexpected": 1}', "Extra inputs are not permitted"),
    ],
)
async def test_a_malformed_message_goes_straight_to_dead_letter_and_the_consumer_goes_on(
    settings: Settings, payload: bytes, expected_error: str
) -> None:
    applied: list[CostRecorded] = []

    async def record(event: CostRecorded) -> None:
        applied.append(event)

    async with consumer(settings, record):
        await publish_raw(settings, payload, "bad-" + uuid.uuid4().hex)
        good = a_cost()
        await publish_raw(settings, good.model_dump_json().encode(), str(good.event_id))
        letters = await eventually(lambda: dead_letters(settings), timeout=10)
        await eventually(lambda: asyncio.sleep(0, result=applied), timeout=10)
    assert applied == [good]
    (letter,) = letters
    assert letter.data == payload
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "invalid_message"
    assert letter.headers[HEADER_DELIVERIES] == "1"  # not retried
    assert letter.headers[HEADER_SUBJECT] == settings.subjects.for_org("cost_recorded", "acme")
    assert expected_error in letter.headers["Routewise-DeadLetter-Error"]


@pytest.mark.parametrize(("org", "other"), [("acme", "globex"), ("a.b", "a")])
async def test_an_event_on_another_orgs_subject_is_dead_lettered_and_never_applied(
    settings: Settings, org: str, other: str
) -> None:
    """A tenant's bus user may publish only on its own org's subject: an event whose scope names
    another org than the subject it came on is refused (not retried), its own org's is applied.
    ``a.b``'s cost on org ``a``'s subject is the same forgery, not a subject token of ``a``."""
    applied: list[CostRecorded] = []

    async def record(event: CostRecorded) -> None:
        applied.append(event)

    forged, good = a_cost(scope=Scope(org_id=org)), a_cost(scope=Scope(org_id=org))
    async with consumer(settings, record):
        await publish_raw(settings, forged.model_dump_json().encode(), str(forged.event_id), org=other)
        await publish_raw(settings, good.model_dump_json().encode(), str(good.event_id), org=org)
        (letter,) = await eventually(lambda: dead_letters(settings), timeout=10)
        await eventually(lambda: asyncio.sleep(0, result=applied), timeout=10)
        await asyncio.sleep(0.3)  # time enough for a wrongly retried forgery to arrive after all
    assert applied == [good]
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "scope_mismatch"
    assert letter.headers[HEADER_DELIVERIES] == "1"  # not retried
    assert letter.headers[HEADER_SUBJECT] == settings.subjects.for_org("cost_recorded", other)
    assert CostRecorded.model_validate_json(letter.data) == forged


async def test_replicas_starting_together_all_set_up_the_streams(settings: Settings) -> None:
    """Replicas of a service start at the same moment on a fresh namespace; none may fail."""
    clients = [await nats.connect(settings.nats_url) for _ in range(6)]
    try:
        await asyncio.gather(*(ensure_streams(nc.jetstream(), settings) for nc in clients))
        js = clients[0].jetstream()
        names = {stream.name for stream in settings.subjects.streams}
        assert {(await js.stream_info(name)).config.name for name in names} == names
    finally:
        for nc in clients:
            await nc.close()


async def test_the_stream_drops_a_republished_event_id(settings: Settings) -> None:
    seen: list[uuid.UUID] = []

    async def record(event: CostRecorded) -> None:
        seen.append(event.event_id)

    async with consumer(settings, record):
        event = a_cost()
        for _ in range(3):
            await publish_raw(settings, event.model_dump_json().encode(), str(event.event_id))
        marker = a_cost()
        await publish_raw(settings, marker.model_dump_json().encode(), str(marker.event_id))
        await eventually(lambda: asyncio.sleep(0, result=marker.event_id in seen), timeout=10)
    assert seen == [event.event_id, marker.event_id]


async def test_a_message_that_crashed_its_consumer_is_dead_lettered_without_running_the_handler(
    settings: Settings,
) -> None:
    calls = 0

    async def record(event: CostRecorded) -> None:
        nonlocal calls
        calls += 1

    async with consumer(settings, record):
        pass  # creates the durable consumer
    event = a_cost()
    await publish_raw(settings, event.model_dump_json().encode(), str(event.event_id))
    # as if a consumer took the message max_deliver times and died each time, with no verdict
    nc = await nats.connect(settings.nats_url)
    try:
        pull = await nc.jetstream().pull_subscribe_bind(
            durable=durable("testsvc", settings.subjects.of(CostRecorded)), stream=settings.subjects.events_stream.name
        )
        for _ in range(settings.max_deliver):
            (taken,) = await pull.fetch(1, timeout=5)
            await taken.nak()
    finally:
        await nc.close()
    async with consumer(settings, record):
        (letter,) = await eventually(lambda: dead_letters(settings), timeout=15)
    assert calls == 0  # the poison message never reached the handler again
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "max_deliver_exceeded"
    assert letter.headers[HEADER_DELIVERIES] == str(settings.max_deliver + 1)
    assert "crashed or timed out" in letter.headers["Routewise-DeadLetter-Error"]


def without_event_id(event: CostRecorded) -> bytes:
    return event.model_dump_json(exclude={"event_id"}).encode()


async def test_an_event_without_its_id_takes_it_from_nats_msg_id_on_every_delivery(settings: Settings) -> None:
    """Redelivered, it is the same event (a random id per delivery made each one new)."""
    seen: list[uuid.UUID] = []

    async def fails_once(event: CostRecorded) -> None:
        seen.append(event.event_id)
        if len(seen) == 1:
            raise RuntimeError("transient")

    msg_id = str(uuid.uuid4())
    async with consumer(settings, fails_once):
        await publish_raw(settings, without_event_id(a_cost()), msg_id)
        await eventually(lambda: asyncio.sleep(0, result=len(seen) == 2), timeout=10)
    assert seen == [uuid.UUID(msg_id)] * 2

    other: list[uuid.UUID] = []

    async def record(event: CostRecorded) -> None:
        other.append(event.event_id)

    async with consumer(settings, record):  # a Nats-Msg-Id that is not a UUID still names one id
        await publish_raw(settings, without_event_id(a_cost()), "client-retry-key-42")
        await eventually(lambda: asyncio.sleep(0, result=other), timeout=10)
    assert other == [uuid.uuid5(uuid.UUID("0b9f6d7e-3c1a-5e8f-9a42-6d1c2b7e4f10"), "client-retry-key-42")]


async def test_an_event_with_no_id_at_all_is_dead_lettered_not_applied(settings: Settings) -> None:
    applied: list[CostRecorded] = []

    async def record(event: CostRecorded) -> None:
        applied.append(event)

    async with consumer(settings, record):
        nc = await nats.connect(settings.nats_url)
        try:  # no payload id, no Nats-Msg-Id
            await nc.jetstream().publish(settings.subjects.for_org("cost_recorded", "acme"), without_event_id(a_cost()))
        finally:
            await nc.close()
        (letter,) = await eventually(lambda: dead_letters(settings), timeout=10)
    assert applied == []
    assert letter.headers is not None and letter.headers[HEADER_REASON] == "invalid_message"
    assert "needs its event_id" in letter.headers["Routewise-DeadLetter-Error"]


def nested(depth: int) -> bytes:
    return b'{"task_id": ' + b"[" * depth + b"]" * depth + b"}"


async def test_json_nested_a_thousand_levels_is_dead_lettered_at_once(settings: Settings) -> None:
    async with consumer(settings, lambda _: asyncio.sleep(0)):
        await publish_raw(settings, nested(1_000), "deep-" + uuid.uuid4().hex)
        (letter,) = await eventually(lambda: dead_letters(settings), timeout=10)
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "invalid_message"
    assert letter.headers[HEADER_DELIVERIES] == "1"  # not retried


async def test_a_request_nested_a_thousand_levels_is_answered(settings: Settings) -> None:
    broker = build_broker(settings, "testsvc", TracerProvider(), CollectorRegistry())
    router = NatsRouter()

    async def echo(req: GetBudgetStatus) -> BudgetStatus:
        raise AssertionError("never called with an invalid request")

    reply(router, settings.subjects.budget_status, "testsvc", GetBudgetStatus, BudgetStatus, echo)
    broker.include_router(router)
    await broker.start()
    nc = await nats.connect(settings.nats_url)
    try:
        answer = await nc.request(settings.subjects.budget_status, nested(1_000), timeout=5)
    finally:
        await nc.close()
        await broker.stop()
    assert json.loads(answer.data)["error"]["code"] == "invalid_request"
