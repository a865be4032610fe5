"""Property-based fuzz of every consumed and answered subject (issue 12).

Every subject a service consumes or answers (walked from the services' tables, so a new subject
is fuzzed without editing this file) is sent documents drawn from its contract's JSON schema and
hostile payloads (tests/fuzzing.py), all at once, with valid traffic of known amounts in among
them. Then, whatever was sent:

- every request got an answer: the reply contract, or ``{"error": ...}`` (``invalid_request``
  for what the contract refuses; never ``internal``, never silence);
- every event is applied (its id in the consumer's inbox) or dead-lettered with a reason, by
  each service that consumes it, and all of them agree on whether the contract accepts it;
- the valid traffic is applied exactly: the spend of N costs is their exact sum, every task
  gets its ModelSelected; and every service still answers.

The figures (messages per subject, outcomes) are printed; with ``ROUTEWISE_FUZZ_RESULTS=1`` they
are written to bench/results/fuzz.json too:

    ROUTEWISE_FUZZ_RESULTS=1 uv run --frozen pytest tests/system/test_fuzz.py -n0 -s
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import asyncpg
import nats
import nats.errors
from nats.aio.msg import Msg
from pydantic import BaseModel

from routewise.client.deadletters import HEADER_REASON, HEADER_SERVICE
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.errors import ErrorReply
from routewise.contracts.events import ModelSelected, Scope, TaskArrived
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from routewise.contracts.subjects import SERVICES, Subjects
from routewise.runtime.asyncapi import document
from routewise.runtime.inprocess import System
from routewise.runtime.inprocess import service as table
from tests.fuzzing import Payload, Target, accepts, payloads, raw_payloads, targets
from tests.helpers import a_cost, eventually

EXAMPLES_PER_SUBJECT = 20
"""Drawn by hypothesis for each subject (derandomized: the same on every run), besides the raw
hostile payloads every subject gets."""
SHUFFLE_SEED = 12
REPLY_TIMEOUT_S = 15.0
IN_FLIGHT = 32
FUZZ_HEADER = "Routewise-Fuzz-Id"
"""Travels with each message (and its dead letter: the runtime keeps the original's headers)."""


@dataclass
class Sent:
    target: Target
    payload: Payload
    fuzz_id: str
    accepted: bool
    """The contract takes it (an event: with the id it will be applied under)."""
    event_id: uuid.UUID | None = None
    msg_id: str | None = None
    answer: str | None = None
    """A request's outcome: ``ok``, ``error:<code>``, ``no_answer`` or ``unreadable``."""
    said: str = ""
    """An error reply's message (the start of it)."""


@dataclass
class Traffic:
    org: str
    """The org of the valid traffic."""
    sent: list[Sent] = field(default_factory=list)
    costs: list[Decimal] = field(default_factory=list)
    tasks: list[TaskArrived] = field(default_factory=list)
    known: list[tuple[str, bytes, str]] = field(default_factory=list)
    """The valid traffic: (subject name, body, Nats-Msg-Id)."""


def _fresh_ids(body: bytes, names: tuple[str, ...]) -> bytes:
    """Each event a new one (its id, and a task's id, drawn afresh): a repeated id is a duplicate,
    dropped by design and tested on its own."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(doc, dict):
        return body
    for name in names:
        if isinstance(doc.get(name), str):
            try:
                uuid.UUID(doc[name])
            except ValueError:
                continue
            doc[name] = str(uuid.uuid4())
    return json.dumps(doc).encode()


def _event_id(body: bytes, msg_id: str | None) -> uuid.UUID | None:
    """The id a consumer applies an accepted event under: the payload's, else its Nats-Msg-Id's."""
    found = json.loads(body).get("event_id")
    if found is not None:
        return uuid.UUID(found)
    return uuid.UUID(msg_id) if msg_id else None


def fuzz_traffic(all_targets: list[Target], org: str) -> Traffic:
    traffic = Traffic(org)
    for target in all_targets:
        drawn = payloads(target.contract, EXAMPLES_PER_SUBJECT) + raw_payloads()
        for i, payload in enumerate(drawn):
            body, msg_id = payload.body, None
            if target.is_event:
                names = ("event_id", "task_id") if target.contract is TaskArrived else ("event_id",)
                body, msg_id = _fresh_ids(body, names), str(uuid.uuid4())
            accepted = accepts(target.contract, body)
            sent = Sent(target, Payload(payload.kind, body), f"{target.subject}#{i}", accepted, msg_id=msg_id)
            if target.is_event and accepted:
                sent.event_id = _event_id(body, msg_id)
            traffic.sent.append(sent)
        if target.is_event:  # no id at all: neither in the payload nor as Nats-Msg-Id
            doc = next((json.loads(s.payload.body) for s in traffic.sent if s.target is target and s.accepted), None)
            if doc is not None:
                doc.pop("event_id", None)
                body = json.dumps(doc).encode()
                traffic.sent.append(
                    Sent(target, Payload("no_event_id", body), f"{target.subject}#no-id", accepted=False)
                )
    scope = Scope(org_id=org)
    for i in range(20):  # known amounts, exact to the last of 12 places
        amount = Decimal(f"{(i * 7919) % 10_000}.{(i * 104_729) % 10**12:012d}")
        cost = a_cost(scope, str(amount))
        traffic.costs.append(amount)
        traffic.known.append(("cost_recorded", cost.model_dump_json().encode(), str(cost.event_id)))
    for i in range(10):
        task = TaskArrived(scope=scope, prompt=f"Summarise fuzz note {i} in one line.")
        traffic.tasks.append(task)
        traffic.known.append(("task_arrived", task.model_dump_json().encode(), str(task.event_id)))
    return traffic


async def send_all(nc: nats.NATS, system: System, traffic: Traffic) -> None:
    """Everything at once (``IN_FLIGHT`` at a time), fuzz and valid traffic shuffled together."""
    js = nc.jetstream()
    subjects = system.settings.subjects
    gate = asyncio.Semaphore(IN_FLIGHT)
    jobs: list[Any] = [*traffic.sent, *traffic.known]
    random.Random(SHUFFLE_SEED).shuffle(jobs)

    async def one(job: Sent | tuple[str, bytes, str]) -> None:
        async with gate:
            if isinstance(job, tuple):
                name, body, msg_id = job
                await js.publish(subjects.for_org(name, traffic.org), body, headers={"Nats-Msg-Id": msg_id})
            elif job.target.is_event:
                headers = {FUZZ_HEADER: job.fuzz_id} | ({"Nats-Msg-Id": job.msg_id} if job.msg_id else {})
                subject = job.target.subject_for(subjects, job.payload.body)
                await js.publish(subject, job.payload.body, headers=headers)
            else:
                job.answer = await ask(nc, job)

    await asyncio.gather(*(one(job) for job in jobs))


async def ask(nc: nats.NATS, sent: Sent) -> str:
    """A request's outcome: ``ok`` (the reply contract), ``error:<code>``, ``no_answer``, ``unreadable``."""
    try:
        reply = await nc.request(
            sent.target.subject, sent.payload.body, timeout=REPLY_TIMEOUT_S, headers={FUZZ_HEADER: sent.fuzz_id}
        )
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return "no_answer"
    try:
        body = json.loads(reply.data)
        if isinstance(body, dict) and "error" in body:
            error = ErrorReply.model_validate(body).error
            sent.said = error.message[:300]
            return f"error:{error.code}"
        assert sent.target.reply is not None
        sent.target.reply.model_validate_json(reply.data)
    except ValueError:
        return "unreadable"
    return "ok"


async def applied_ids(admin: asyncpg.Connection, service: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await admin.fetch(f"SELECT event_id FROM {service}.inbox WHERE event_id = ANY($1::uuid[])", ids)
    return {row["event_id"] for row in rows}


async def event_outcomes(
    admin: asyncpg.Connection, traffic: Traffic, dead: dict[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """{(service, fuzz id): ``applied`` or ``dead_lettered:<reason>``} of every event as far as now."""
    events = [s for s in traffic.sent if s.target.is_event]
    outcomes: dict[tuple[str, str], str] = {}
    for service in {c for s in events for c in s.target.consumers}:
        ids = [s.event_id for s in events if s.event_id is not None and service in s.target.consumers]
        applied = await applied_ids(admin, service, ids)  # type: ignore[arg-type]
        for s in events:
            if service not in s.target.consumers:
                continue
            key = (service, s.fuzz_id)
            if key in dead:
                outcomes[key] = f"dead_lettered:{dead[key]}"
            elif s.event_id in applied:
                outcomes[key] = "applied"
    return outcomes


def figures(traffic: Traffic, outcomes: dict[tuple[str, str], str], seconds: float) -> dict[str, Any]:
    """What was sent and what came of it: per subject, and in total."""
    per_subject: dict[str, dict[str, Any]] = {}
    requests: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for s in traffic.sent:
        entry = per_subject.setdefault(
            s.target.subject.split(".", 1)[1],
            {"kind": "event" if s.target.is_event else "request", "sent": 0, "accepted": 0, "outcomes": Counter()},
        )
        entry["sent"] += 1
        entry["accepted"] += s.accepted
        verdict = "accepted" if s.accepted else "refused"
        if not s.target.is_event:
            entry["outcomes"][f"{verdict}:{s.answer or 'not_sent'}"] += 1
            requests[s.answer or "not_sent"] += 1
        for service in s.target.consumers if s.target.is_event else ():
            outcome = outcomes.get((service, s.fuzz_id), "neither")
            entry["outcomes"][f"{verdict}:{service}:{outcome}"] += 1
            events[outcome] += 1
    return {
        "subjects": len(per_subject),
        "messages": len(traffic.sent),
        "seconds": round(seconds, 1),
        "payloads": dict(sorted(Counter(s.payload.kind.split(":")[0] for s in traffic.sent).items())),
        "requests": {"sent": sum(requests.values()), **dict(sorted(requests.items()))},
        "events": {
            "sent": sum(1 for s in traffic.sent if s.target.is_event),
            "consumer_outcomes": sum(events.values()),
            **dict(sorted(events.items())),
        },
        "valid_traffic": {"costs": len(traffic.costs), "tasks": len(traffic.tasks)},
        "per_subject": {
            name: {**entry, "outcomes": dict(sorted(entry["outcomes"].items()))}
            for name, entry in sorted(per_subject.items())
        },
    }


def record(report: dict[str, Any]) -> None:
    """Print the figures (``pytest -s`` shows them); with ``ROUTEWISE_FUZZ_RESULTS=1``, write them
    to bench/results/fuzz.json as well."""
    print("fuzz figures:", json.dumps(report, indent=2))
    if os.environ.get("ROUTEWISE_FUZZ_RESULTS"):
        from bench.common import write_results

        write_results("fuzz", report)


async def test_whatever_is_sent_every_request_is_answered_every_event_applied_or_dead_lettered(
    system: System, admin: asyncpg.Connection
) -> None:
    subjects = system.settings.subjects
    all_targets = targets(subjects)
    org = f"fuzz-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    traffic = fuzz_traffic(all_targets, org)

    nc = await nats.connect(system.settings.nats_url)
    dead: dict[tuple[str, str], str] = {}
    selected: set[uuid.UUID] = set()

    async def on_dead_letter(msg: Msg) -> None:
        headers = msg.headers or {}
        if FUZZ_HEADER in headers:
            dead[(headers[HEADER_SERVICE], headers[FUZZ_HEADER])] = headers.get(HEADER_REASON, "")

    async def on_selected(msg: Msg) -> None:
        with contextlib.suppress(ValueError):  # the fuzz publishes on this subject too
            selected.add(ModelSelected.model_validate_json(msg.data).task_id)

    try:
        js = nc.jetstream()
        await js.subscribe(
            f"{subjects.namespace}.deadletter.>", cb=on_dead_letter, stream=subjects.dead_letter_stream.name
        )
        await nc.subscribe(subjects.of(ModelSelected), cb=on_selected)
        await send_all(nc, system, traffic)

        events = [s for s in traffic.sent if s.target.is_event]
        expected = sum(len(s.target.consumers) for s in events)

        async def settled() -> dict[tuple[str, str], str] | None:
            outcomes = await event_outcomes(admin, traffic, dead)
            return outcomes if len(outcomes) == expected else None

        with contextlib.suppress(AssertionError):  # not settled in time: the checks below say which
            await eventually(settled, timeout=60, interval=0.2)
        outcomes = await event_outcomes(admin, traffic, dead)
        record(figures(traffic, outcomes, time.perf_counter() - started))
        check_answers([s for s in traffic.sent if not s.target.is_event])
        check_events(events, outcomes)

        # the valid traffic in among it: applied exactly
        scope = Scope(org_id=org)
        assert await eventually(lambda: asyncio.sleep(0, result=selected >= {t.task_id for t in traffic.tasks}), 30)

        async def spend() -> tuple[BudgetStatus, MetricsSummary] | None:
            status = await request(nc, subjects.budget_status, GetBudgetStatus(scope=scope), BudgetStatus)
            summary = await request(nc, subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            done = status.costs_recorded == summary.costs_recorded == len(traffic.costs)
            return (status, summary) if done else None

        status, summary = await eventually(spend, timeout=30)
        assert status.spent_usd == summary.actual_cost_usd == sum(traffic.costs)
        # and every service is still there: each answers a request of its own
        for name in SERVICES:
            target = next(t for t in all_targets if t.consumers == (name,) and takes_nothing(t.contract))
            assert await ask(nc, Sent(target, Payload("valid", b"{}"), f"{name}#after", accepted=True)) == "ok"
    finally:
        await nc.close()
    assert all(rt.broker.running for runtimes in system.runtimes.values() for rt in runtimes)


def check_answers(requests: list[Sent]) -> None:
    """Every request answered, with its contract or an error: never ``internal``, and what the
    contract refuses as ``invalid_request``."""
    assert [(s.fuzz_id, s.payload.kind) for s in requests if s.answer in ("no_answer", "unreadable")] == []
    assert [(s.fuzz_id, s.payload.kind, s.said) for s in requests if s.answer == "error:internal"] == []
    refused = [s for s in requests if not s.accepted]
    assert [(s.fuzz_id, s.payload.kind, s.answer) for s in refused if s.answer != "error:invalid_request"] == []


def check_events(events: list[Sent], outcomes: dict[tuple[str, str], str]) -> None:
    """Every event applied or dead-lettered by each of its consumers, and all of them agree: what the
    contract takes is applied by every one, what it refuses dead-lettered as invalid by every one."""
    wrong = []
    for s in events:
        wanted = "applied" if s.accepted else "dead_lettered:invalid_message"
        for consumer in s.target.consumers:
            outcome = outcomes.get((consumer, s.fuzz_id), "neither")
            if outcome != wanted:
                wrong.append((consumer, s.fuzz_id, s.payload.kind, outcome))
    assert wrong == []


def takes_nothing(contract: type[BaseModel]) -> bool:
    """A request that can be asked without arguments (a list, a summary)."""
    return accepts(contract, b"{}")


async def request(nc: nats.NATS, subject: str, payload: Any, reply_type: type[Any]) -> Any:
    reply = await nc.request(subject, payload.model_dump_json().encode(), timeout=REPLY_TIMEOUT_S)
    return reply_type.model_validate_json(reply.data)


def test_every_subject_the_asyncapi_documents_as_received_is_fuzzed() -> None:
    """The fuzz walks the same tables as the services' AsyncAPI: what a service documents that it
    consumes or answers is fuzzed (its notices, which carry no payload, aside)."""
    subjects = Subjects()
    fuzzed = {(consumer, t.subject) for t in targets(subjects) for consumer in t.consumers}
    documented = set()
    for name in SERVICES:
        doc = document(name)
        for operation in doc["operations"].values():
            if operation["action"] == "receive":
                # a reference is URL-encoded (every org's ``<ns>.costs.recorded.*`` is ``...%2A``)
                channel = doc["channels"][unquote(operation["channel"]["$ref"].rsplit("/", 1)[1])]
                documented.add((name, channel["address"]))
    notices = {(name, getattr(subjects, notice)) for name in SERVICES for notice in table(name).notices}
    assert documented - notices == fuzzed
