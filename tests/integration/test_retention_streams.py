"""Retention by role, against a real NATS JetStream: each stream's limits, the move of the events
older releases left on subjects without their org (and of tasks out of the events stream), and
dead letters of tasks without their prompt."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import nats
import pytest
from faststream.nats import NatsRouter
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from routewise.client.deadletters import HEADER_REDACTED
from routewise.client.wire import msg_id_headers
from routewise.contracts.errors import PermanentError
from routewise.contracts.events import CostRecorded, Event, RejectionReason, Scope, TaskArrived, TaskRejected
from routewise.contracts.subjects import durable, subject_matches
from routewise.runtime.bus import consume
from routewise.runtime.inprocess import in_process
from routewise.runtime.service import build_broker
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams
from tests.conftest import Database, run_cli
from tests.helpers import consuming, eventually

DAY_S = 24 * 3600
PROMPT = "Summarise the merger terms for Project Nightingale before the board meets on Friday"


def a_task(**overrides: object) -> TaskArrived:
    fields: dict[str, object] = {"scope": Scope(org_id="acme"), "prompt": PROMPT}
    fields.update(overrides)
    return TaskArrived.model_validate(fields)


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(settings.nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def test_each_stream_keeps_what_its_role_needs(settings: Settings) -> None:
    """Prompts a day, decisions and alerts a month, dead letters two weeks and bounded in bytes;
    none of them forever."""
    s = settings.subjects
    async with connected(settings) as js:
        await ensure_streams(js, settings)
        configs = {stream.name: (await js.stream_info(stream.name)).config for stream in s.streams}
    tasks, events = configs[s.tasks_stream.name], configs[s.events_stream.name]
    alerts, dead = configs[s.alerts_stream.name], configs[s.dead_letter_stream.name]
    assert tasks.subjects == [s.of(TaskArrived)]
    assert tasks.max_age == DAY_S
    assert not any(subject_matches(p, s.for_org("task_arrived", "acme")) for p in events.subjects or [])
    assert s.of(TaskRejected) in (events.subjects or [])  # a decision: kept with the others
    assert events.max_age == 30 * DAY_S
    assert alerts.max_age == 30 * DAY_S
    assert dead.max_age == 14 * DAY_S
    assert dead.max_bytes == 1024**3
    for config in configs.values():
        assert config.storage == StorageType.FILE and config.retention == RetentionPolicy.LIMITS
        assert config.duplicate_window is not None and config.max_age is not None
        assert config.duplicate_window <= config.max_age


async def test_the_limits_follow_the_settings_and_an_existing_stream_is_brought_to_them(settings: Settings) -> None:
    async with connected(settings) as js:
        await ensure_streams(js, settings)
        shorter = settings.model_copy(
            update={
                "tasks_stream_max_age_hours": 0.5,
                "events_stream_max_age_days": 7,
                "dead_letter_stream_max_bytes": 64 * 1024**2,
            }
        )
        await ensure_streams(js, shorter)  # a redeploy with other settings updates the streams in place
        s = settings.subjects
        tasks = (await js.stream_info(s.tasks_stream.name)).config
        events = (await js.stream_info(s.events_stream.name)).config
        dead = (await js.stream_info(s.dead_letter_stream.name)).config
    assert tasks.max_age == 1800
    assert tasks.duplicate_window == 1800  # JetStream wants the window within the age
    assert events.max_age == 7 * DAY_S
    assert dead.max_bytes == 64 * 1024**2


def test_tasks_are_kept_past_their_decision_deadline_and_no_longer_than_the_inbox_remembers() -> None:
    with pytest.raises(ValueError, match="inbox_retention_days"):
        Settings(tasks_stream_max_age_hours=24 * 8, inbox_retention_days=7)
    with pytest.raises(ValueError, match="decision_deadline"):
        Settings(tasks_stream_max_age_hours=0.1, decision_deadline=600)


async def add_streams(js: JetStreamContext, streams: dict[str, list[str]]) -> None:
    """Streams as an older release made them: these subjects, kept forever."""
    for name, subjects in streams.items():
        await js.add_stream(StreamConfig(name=name, subjects=subjects, duplicate_window=DAY_S, max_age=0))


async def layout_before_the_tasks_stream(js: JetStreamContext, settings: Settings) -> None:
    """Two releases ago: no tasks stream (the tasks in the events stream), no org in any subject."""
    ns, s = settings.namespace, settings.subjects
    await add_streams(
        js,
        {
            s.events_stream.name: [f"{ns}.tasks.>", f"{ns}.models.>", f"{ns}.costs.>", f"{ns}.feedback.>"],
            s.alerts_stream.name: [f"{s.budget_alerts}.>"],
            s.dead_letter_stream.name: [f"{ns}.deadletter.>"],
        },
    )


async def layout_before_the_org_subjects(js: JetStreamContext, settings: Settings) -> None:
    """The previous release: the tasks stream on ``<ns>.tasks.arrived``, rejections on
    ``<ns>.tasks.rejected``, costs on ``<ns>.costs.recorded``: no org in the subjects."""
    ns, s = settings.namespace, settings.subjects
    await add_streams(
        js,
        {
            s.events_stream.name: [s.task_rejected, f"{ns}.models.>", f"{ns}.costs.>", f"{ns}.feedback.>"],
            s.tasks_stream.name: [s.task_arrived],
            s.alerts_stream.name: [f"{s.budget_alerts}.>"],
            s.dead_letter_stream.name: [f"{ns}.deadletter.>"],
        },
    )


async def publish_bare(js: JetStreamContext, subject: str, event: Event) -> None:
    """As an older release's client did: on the subject without the org."""
    await js.publish(subject, event.model_dump_json().encode(), headers=msg_id_headers(event))


async def applied_before_the_upgrade(
    js: JetStreamContext, stream: str, service: str, subject: str, acked: list[int], fetched: int
) -> None:
    """A durable consumer of the older release took the first ``fetched`` messages of ``subject``
    and acknowledged these (0-based; the others are in flight, or failed, when it stops)."""
    name = durable(service, subject)
    await js.add_consumer(
        stream, ConsumerConfig(durable_name=name, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT)
    )
    pull = await js.pull_subscribe_bind(name, stream)
    taken = await pull.fetch(fetched, timeout=5)
    assert len(taken) == fetched
    for i, msg in enumerate(taken):
        if i in acked:
            await msg.ack_sync()
    await pull.unsubscribe()


async def upgrade(js: JetStreamContext, settings: Settings) -> None:
    """Replicas of the new release start at once (they bring the streams up to date and leave the
    old events where they are: their bus users may not read or purge a stream), then the operator
    runs `routewise streams upgrade`, twice as it happens (nothing is left to move the second time)."""
    await asyncio.gather(*(ensure_streams(js, settings, move_old_events=False) for _ in range(3)))
    env = {"ROUTEWISE_NATS_URL": settings.nats_url, "ROUTEWISE_NAMESPACE": settings.namespace}
    moved = []
    for _ in range(2):
        done = await asyncio.to_thread(run_cli, ["streams", "upgrade", "--json"], env)
        assert done.returncode == 0, done.stderr + done.stdout
        moved.append(json.loads(done.stdout)["moved"])
    assert moved[0] > 0 and moved[1] == 0


async def on_subjects(js: JetStreamContext, stream: str) -> dict[str, int]:
    return dict((await js.stream_info(stream, subjects_filter=">")).state.subjects or {})


async def test_the_tasks_an_older_layout_kept_in_the_events_stream_move_to_their_orgs_subject(
    settings: Settings,
) -> None:
    """Two releases ago: tasks the selector had not applied yet are still decided after the
    upgrade, on their org's subject in the tasks stream; none that it had applied comes again; no
    prompt stays in the events stream; the rejection there moves to its org's subject."""
    s = settings.subjects
    tasks = [a_task() for _ in range(4)]
    rejected = TaskRejected(
        task_id=uuid.uuid4(), scope=Scope(org_id="acme"), task_type="normal", reason="budget_exhausted", detail="x"
    )
    async with connected(settings) as js:
        await layout_before_the_tasks_stream(js, settings)
        for task in tasks:
            await publish_bare(js, s.task_arrived, task)
        await publish_bare(js, s.task_rejected, rejected)
        # the selector applied the first two before the upgrade
        await applied_before_the_upgrade(js, s.events_stream.name, "selector", s.task_arrived, [0, 1], 2)

        await upgrade(js, settings)

        assert await on_subjects(js, s.events_stream.name) == {s.for_org("task_rejected", "acme"): 1}
        assert (await js.stream_info(s.events_stream.name)).config.max_age == 30 * DAY_S
        assert [c.name for c in await js.consumers_info(s.events_stream.name)] == []
        # the two not applied, each once, on their org's subject
        assert await on_subjects(js, s.tasks_stream.name) == {s.for_org("task_arrived", "acme"): 2}

    decided: list[uuid.UUID] = []

    async def decide(task: TaskArrived) -> None:
        decided.append(task.event_id)

    async with consuming(settings, "selector", s.of(TaskArrived), TaskArrived, decide):
        await eventually(lambda: asyncio.sleep(0, result=len(decided) >= 2), timeout=10)
        await asyncio.sleep(0.3)  # time enough for a task moved twice to arrive twice
    assert decided == [task.event_id for task in tasks[2:]]


NAMESPACE_OF_IDS = uuid.UUID("0b9f6d7e-3c1a-5e8f-9a42-6d1c2b7e4f10")
"""How the consumers name an event whose payload has no id, from its ``Nats-Msg-Id``."""


async def test_the_events_the_previous_release_published_without_their_org_move_to_their_orgs_subject(
    settings: Settings,
) -> None:
    """The previous release: tasks and costs on subjects without the org, partly applied. After
    the upgrade (replicas at once) every event is on its org's subject, each once, with its event
    id, so a consumer's inbox recognises the ones it had applied: none is applied twice, none is
    lost, and nothing is left on the old subjects."""
    s = settings.subjects
    tasks = [a_task() for _ in range(4)]
    costs = [
        CostRecorded(
            task_id=uuid.uuid4(),
            scope=Scope(org_id=org),
            model="gpt-4o",
            provider="openai",
            input_tokens=1,
            output_tokens=1,
            cost_usd="0.01",
        )
        for org in ("acme", "a.b", "acme", "a.b", "acme")
    ]
    rejected = TaskRejected(
        task_id=uuid.uuid4(), scope=Scope(org_id="globex"), task_type="normal", reason="budget_exhausted", detail="x"
    )
    client_key = "client-retry-key-4"  # the fourth cost was sent without its id: it is named by its Nats-Msg-Id
    ids = [c.event_id for c in costs[:3]] + [uuid.uuid5(NAMESPACE_OF_IDS, client_key), costs[4].event_id]
    async with connected(settings) as js:
        await layout_before_the_org_subjects(js, settings)
        for task in tasks:
            await publish_bare(js, s.task_arrived, task)
        for i, cost in enumerate(costs):
            if i == 3:
                data = cost.model_dump_json(exclude={"event_id"}).encode()
                await js.publish(s.cost_recorded, data, headers={"Nats-Msg-Id": client_key})
            else:
                await publish_bare(js, s.cost_recorded, cost)
        await publish_bare(js, s.task_rejected, rejected)
        await applied_before_the_upgrade(js, s.tasks_stream.name, "selector", s.task_arrived, [0, 1], 2)
        # budget-enforcer applied the 1st, 2nd and 4th cost (the 3rd failed); metrics the 1st alone
        await applied_before_the_upgrade(js, s.events_stream.name, "budget_enforcer", s.cost_recorded, [0, 1, 3], 4)
        await applied_before_the_upgrade(js, s.events_stream.name, "metrics", s.cost_recorded, [0], 1)
        inbox = {"budget_enforcer": {ids[0], ids[1], ids[3]}, "metrics": {ids[0]}}

        await upgrade(js, settings)

        acme, ab = s.for_org("cost_recorded", "acme"), s.for_org("cost_recorded", "a.b")
        # from the first cost a consumer had not acknowledged (metrics': the 2nd), each once
        assert await on_subjects(js, s.events_stream.name) == {
            acme: 2,  # the 3rd and 5th
            ab: 2,  # the 2nd and 4th, on org a.b's own token (a=2Eb), not org a's
            s.for_org("task_rejected", "globex"): 1,
        }
        assert await on_subjects(js, s.tasks_stream.name) == {s.for_org("task_arrived", "acme"): 2}
        for stream in (s.events_stream.name, s.tasks_stream.name):  # the older release's consumers are gone
            assert [c.name for c in await js.consumers_info(stream)] == []

    delivered: dict[str, list[uuid.UUID]] = {"budget_enforcer": [], "metrics": []}
    before = {svc: set(seen) for svc, seen in inbox.items()}

    def applier(service: str) -> Callable[[CostRecorded], Awaitable[None]]:
        async def apply(cost: CostRecorded) -> None:
            delivered[service].append(cost.event_id)
            inbox[service].add(cost.event_id)  # an id applied before is skipped: the inbox

        return apply

    decided: list[uuid.UUID] = []

    async def decide(task: TaskArrived) -> None:
        decided.append(task.event_id)

    async with (
        consuming(settings, "budget_enforcer", s.of(CostRecorded), CostRecorded, applier("budget_enforcer")),
        consuming(settings, "metrics", s.of(CostRecorded), CostRecorded, applier("metrics")),
        consuming(settings, "selector", s.of(TaskArrived), TaskArrived, decide),
    ):
        await eventually(
            lambda: asyncio.sleep(0, result=min(len(d) for d in delivered.values()) >= 4 and len(decided) >= 2),
            timeout=15,
        )
        await asyncio.sleep(0.3)  # time enough for an event moved twice to arrive twice
    assert decided == [task.event_id for task in tasks[2:]]
    # each moved event once, with its own id (the 4th's from its Nats-Msg-Id) ...
    for service, got in delivered.items():
        assert sorted(got) == sorted(ids[1:])
        assert inbox[service] == set(ids)  # ... so each cost is applied by each service: the lost ones too
    # and what an inbox recognises and skips is exactly what that service had applied before
    assert set(delivered["budget_enforcer"]) & before["budget_enforcer"] == {ids[1], ids[3]}
    assert set(delivered["metrics"]) & before["metrics"] == set()


async def dead_letter_of(settings: Settings, service: str, payload: bytes) -> Msg:
    """Publish ``payload`` as a TaskArrived, as it is; the dead letter ``service`` writes of it."""
    s = settings.subjects
    async with connected(settings) as js:
        letters = await js.subscribe(
            s.dead_letter(service),
            stream=s.dead_letter_stream.name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),  # this one's, not earlier ones
            ordered_consumer=True,
        )
        await js.publish(s.for_org("task_arrived", "acme"), payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        return await letters.next_msg(timeout=10)


async def refuse(_: TaskArrived) -> None:
    raise PermanentError("cannot decide this task")


def fragments(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text) - size + 1, 4)]


def carries_prompt(letter: Msg) -> bool:
    seen = letter.data.decode() + json.dumps(dict(letter.headers or {}))
    return any(fragment in seen for fragment in fragments(PROMPT))


async def test_a_dead_lettered_task_keeps_no_prompt_text_when_redaction_is_on(settings: Settings) -> None:
    redacting = settings.model_copy(update={"redact_prompts": True})
    task = a_task(messages=None, prompt=PROMPT)
    chat = a_task(
        prompt=None, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    )
    async with consuming(redacting, "selector", redacting.subjects.of(TaskArrived), TaskArrived, refuse):
        letter = await dead_letter_of(redacting, "selector", task.model_dump_json().encode())
        chat_letter = await dead_letter_of(redacting, "selector", chat.model_dump_json().encode())
        # not a valid TaskArrived: pydantic quotes the start of the input in its error
        invalid = json.dumps(
            {"task_id": str(uuid.uuid4()), "scope": {"org_id": "acme"}, "prompt": PROMPT, "messages": []}
        )
        invalid_letter = await dead_letter_of(redacting, "selector", invalid.encode())

    for each in (letter, chat_letter, invalid_letter):
        assert not carries_prompt(each)
        assert each.headers is not None and each.headers[HEADER_REDACTED] == "prompt"
    assert (
        invalid_letter.headers is not None
        and invalid_letter.headers["Routewise-DeadLetter-Reason"] == "invalid_message"
    )
    kept = json.loads(letter.data)
    digest = {"sha256": hashlib.sha256(PROMPT.encode()).hexdigest(), "chars": len(PROMPT)}
    assert kept["prompt"] == {"redacted": digest}  # whose task it was, and which prompt, can still be told
    assert kept["task_id"] == str(task.task_id) and kept["scope"]["org_id"] == "acme"
    assert [m["role"] for m in json.loads(chat_letter.data)["messages"]] == ["system", "user"]
    assert json.loads(chat_letter.data)["messages"][1]["content"] == {"redacted": digest}
    with pytest.raises(ValueError, match="prompt"):  # a redacted task never passes for one: a replay is refused
        TaskArrived.model_validate_json(letter.data)


async def test_without_redaction_a_dead_lettered_task_is_kept_as_sent_for_replay(settings: Settings) -> None:
    task = a_task()
    async with consuming(settings, "selector", settings.subjects.of(TaskArrived), TaskArrived, refuse):
        letter = await dead_letter_of(settings, "selector", task.model_dump_json().encode())
    assert letter.data == task.model_dump_json().encode()
    assert TaskArrived.model_validate_json(letter.data) == task
    assert letter.headers is not None and HEADER_REDACTED not in letter.headers


async def test_other_dead_letters_are_kept_as_sent_when_redaction_is_on(settings: Settings) -> None:
    """Only tasks carry prompts: a cost's dead letter stays whole, to be replayed."""
    redacting = settings.model_copy(update={"redact_prompts": True})
    cost = CostRecorded(
        task_id=uuid.uuid4(),
        scope=Scope(org_id="acme"),
        model="gpt-4o",
        provider="openai",
        input_tokens=1,
        output_tokens=1,
        cost_usd="0.01",
    )

    async def refuse_cost(_: CostRecorded) -> None:
        raise PermanentError("cannot apply this cost")

    s = redacting.subjects
    broker = build_broker(redacting, "testsvc", TracerProvider(), CollectorRegistry())
    router = NatsRouter()
    consume(router, redacting, "testsvc", s.of(CostRecorded), CostRecorded, refuse_cost)
    broker.include_router(router)
    await ensure_streams((await broker.connect()).jetstream(), redacting)
    await broker.start()
    try:
        async with connected(redacting) as js:
            letters = await js.subscribe(s.dead_letter("testsvc"), stream=s.dead_letter_stream.name)
            await js.publish(s.event(cost), cost.model_dump_json().encode(), headers=msg_id_headers(cost))
            letter = await letters.next_msg(timeout=10)
    finally:
        await broker.stop()
    assert letter.data == cost.model_dump_json().encode()
    assert letter.headers is not None and HEADER_REDACTED not in letter.headers


async def test_with_redaction_the_selector_and_metrics_keep_no_prompt_of_an_invalid_task(
    settings: Settings, database: Database
) -> None:
    """The whole system: an invalid task is answered (TaskRejected, which never quotes the prompt)
    and dead-lettered by each service that consumes tasks, with no prompt text anywhere."""
    redacting = settings.model_copy(update={"redact_prompts": True})
    s = redacting.subjects
    task_id = uuid.uuid4()
    task = {"task_id": str(task_id), "scope": {"org_id": "acme"}, "prompt": PROMPT, "quality_bias": 7}
    async with in_process(redacting, database.dsns):
        nc = await nats.connect(redacting.nats_url)
        try:
            js = nc.jetstream()
            answers = await nc.subscribe(s.for_org("task_rejected", "acme"))
            letters = await js.subscribe(f"{redacting.namespace}.deadletter.>", stream=s.dead_letter_stream.name)
            await js.publish(
                s.for_org("task_arrived", "acme"), json.dumps(task).encode(), headers={"Nats-Msg-Id": str(uuid.uuid4())}
            )
            while (
                rejected := TaskRejected.model_validate_json((await answers.next_msg(timeout=10)).data)
            ).task_id != task_id:
                pass
            by_service = {}
            while len(by_service) < 2:
                letter = await letters.next_msg(timeout=10)
                assert letter.headers is not None
                by_service[letter.headers["Routewise-Service"]] = letter
        finally:
            await nc.close()
    assert rejected.reason == RejectionReason.invalid_request
    assert not any(fragment in rejected.detail for fragment in fragments(PROMPT))
    assert set(by_service) == {"selector", "metrics"}
    assert not any(carries_prompt(letter) for letter in by_service.values())
