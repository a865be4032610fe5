"""The chaos test's traffic, as an application sends it: tasks on three orgs (hard and soft
budgets on an org, a team and a user, and an org with none), then the calls (costs) and ratings
(feedback) of the tasks that were given a model; and the ledger of what was sent and answered."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import structlog
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from routewise.client.wire import msg_id_headers
from routewise.contracts.budget import CreateBudget, ThresholdSpec
from routewise.contracts.events import (
    CostRecorded,
    Event,
    FeedbackRecorded,
    ModelSelected,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.subjects import Subjects, subject_matches
from routewise.contracts.vocabulary import BudgetMode, Period, ThresholdAction

log = structlog.get_logger(__name__)

ORGS = ("acme", "globex", "initech")
TEAMS = ("t1", "t2")
USERS = ("u1", "u2")

ABANDONED = 0.08
"""Share of selected tasks whose call is never reported: their hold must expire."""
RETRIED = 0.10
"""Share of selected tasks whose first call fails (and costs) before a second one succeeds."""
RATED = 0.5
"""Share of reported tasks that are also rated (FeedbackRecorded)."""
BARE = 0.25
"""Share of costs and ratings published as a plain NATS client may: the event's id only in the
Nats-Msg-Id header, not in the payload (each must still be applied once, however redelivered)."""
PUBLISH_DEADLINE_S = 180.0
"""How long the application keeps trying to publish one event (NATS may be restarting)."""


def leaf_scopes() -> list[Scope]:
    return [Scope(org_id=o, team_id=t, user_id=u) for o in ORGS for t in TEAMS for u in USERS]


def every_scope() -> list[Scope]:
    """A scope for each org, team and user: one per level of the chains the costs are charged to."""
    orgs = [Scope(org_id=o) for o in ORGS]
    teams = [Scope(org_id=o, team_id=t) for o in ORGS for t in TEAMS]
    return orgs + teams + leaf_scopes()


def narrowest(scope: Scope) -> tuple[str, str]:
    """(scope type, scope id) of a scope's narrowest level, as this version of the contracts names it."""
    return scope.chain()[0]


@dataclass(frozen=True)
class BudgetPlan:
    scope: Scope
    mode: BudgetMode
    limit_usd: Decimal
    thresholds: tuple[int, ...]

    def create(self) -> CreateBudget:
        scope_type, scope_id = narrowest(self.scope)
        notify, block = [ThresholdAction.notify], [ThresholdAction.notify, ThresholdAction.block]
        specs = [
            ThresholdSpec(percent=p, actions=block if self.mode == "hard" and p == 100 else notify)
            for p in self.thresholds
        ]
        return CreateBudget(
            name=f"chaos {scope_type} {scope_id} {self.mode}",
            scope_type=scope_type,  # type: ignore[arg-type]
            scope_id=scope_id,
            period=Period.total,
            limit_usd=self.limit_usd,
            mode=self.mode,
            thresholds=specs,
            actor="tests/chaos",
        )


BUDGETS = (
    # runs out part-way: later acme tasks are rejected (budget_exhausted)
    BudgetPlan(Scope(org_id="acme"), "hard", Decimal("0.06"), (50, 80, 100)),
    # goes far over (soft): every threshold alerts once
    BudgetPlan(Scope(org_id="acme", team_id="t1"), "soft", Decimal("0.01"), (25, 50, 75, 100)),
    BudgetPlan(Scope(org_id="globex"), "soft", Decimal("0.05"), (50, 90, 100)),
    # one user of globex blocked early, the rest of the org goes on
    BudgetPlan(Scope(org_id="globex", team_id="t2", user_id="u1"), "hard", Decimal("0.004"), (50, 100)),
    # initech: no budget (its spend is still kept per scope)
)

PROMPTS = (
    ("simple_query", "What is the capital of country number {n} in the list I sent you?"),
    ("simple_query", "Translate 'order {n} has shipped' into French."),
    ("normal", "Summarise this support ticket in two sentences: {n} customers cannot log in since the update."),
    ("normal", "Write a SQL query that counts the orders per day over the last {n} days, by region."),
    ("normal", "Explain why invoice {n} was charged twice, and draft the email that offers a refund."),
    ("fix_bug", "Fix the bug:\n\ndef mean(xs):\n    return sum(xs) / len(xs) - {n}\n\nIt must return 0 for []."),
)

Answer = ModelSelected | TaskRejected


@dataclass
class Ledger:
    """What the application sent (acknowledged by JetStream) and what it was answered."""

    tasks: dict[UUID, Scope] = field(default_factory=dict)
    costs: list[CostRecorded] = field(default_factory=list)
    feedback: list[FeedbackRecorded] = field(default_factory=list)
    answers: defaultdict[UUID, dict[UUID, Answer]] = field(default_factory=lambda: defaultdict(dict))
    bare: int = 0
    """Events sent with their id in the Nats-Msg-Id header only."""
    publish_retries: int = 0
    read_errors: int = 0

    def sent(self) -> dict[str, int]:
        counts = {
            "TaskArrived": len(self.tasks),
            "CostRecorded": len(self.costs),
            "FeedbackRecorded": len(self.feedback),
        }
        return counts | {"total": sum(counts.values()), "of which id in Nats-Msg-Id only": self.bare}

    def spend(self, scope: Scope) -> tuple[Decimal, int]:
        """The exact sum and the number of the costs sent whose chain includes ``scope``'s narrowest level."""
        level = narrowest(scope)
        charged = [c.cost_usd for c in self.costs if level in c.scope.chain()]
        return sum(charged, Decimal(0)), len(charged)

    def unanswered(self) -> list[UUID]:
        return [t for t in self.tasks if not self.answers.get(t)]


class Traffic:
    """Publishes as a careful application does (each event with its id, again until JetStream
    acknowledges it), and reads the decisions through a durable consumer of its own."""

    def __init__(self, nc: NatsClient, subjects: Subjects, rng: random.Random, ledger: Ledger) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.subjects = subjects
        self.rng = rng
        self.ledger = ledger
        self.follow_ups: asyncio.Queue[list[Event]] = asyncio.Queue()
        self.pending_follow_ups = 0

    async def publish(self, event: Event, *, bare: bool = False) -> None:
        """Until JetStream acknowledges it; ``bare``: without ``event_id`` in the payload."""
        subject = self.subjects.event(event)  # its org's
        data = event.model_dump_json(exclude={"event_id"} if bare else None).encode()
        headers = msg_id_headers(event, {})  # Nats-Msg-Id: the event's id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE_S
        while True:
            try:
                await self.js.publish(subject, data, headers=headers, timeout=5)
                return
            except Exception as exc:  # NATS restarting: the same id again (JetStream drops a repeat)
                self.ledger.publish_retries += 1
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"JetStream did not take {type(event).__name__} for {PUBLISH_DEADLINE_S}s"
                    ) from exc
                await asyncio.sleep(0.25)

    # --- tasks ----------------------------------------------------------------------------

    def a_task(self) -> TaskArrived:
        task_type, prompt = self.rng.choice(PROMPTS)
        scope = self.rng.choice(leaf_scopes())
        return TaskArrived(scope=scope, task_type=task_type, prompt=prompt.format(n=self.rng.randint(2, 9999)))

    async def send_tasks(self, count: int, per_second: float) -> None:
        """``count`` tasks at ``per_second`` (after an outage, the ones due go at once)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            due = start + i / per_second
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = self.a_task()
            self.ledger.tasks[task.task_id] = task.scope  # before: its decision may come before the ack
            await self.publish(task)

    # --- answers --------------------------------------------------------------------------

    async def read_answers(self, subject: str, durable: str) -> None:
        """Every ModelSelected or TaskRejected (``subject``: every org's), through a durable pull
        consumer (it outlives a NATS restart); the first ModelSelected of a task sends its calls
        and rating."""
        stream = self.subjects.events_stream.name
        sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream)
        while True:
            try:
                msgs = await sub.fetch(200, timeout=1)
            except TimeoutError:
                continue
            except Exception as exc:  # NATS restarting
                self.ledger.read_errors += 1
                log.info("reading decisions failed; again", error=repr(exc))
                await asyncio.sleep(0.25)
                continue
            for msg in msgs:
                self.on_answer(msg.subject, msg.data)
                try:
                    await msg.ack()
                except Exception:
                    self.ledger.read_errors += 1  # redelivered: the ledger keeps one per event id

    def on_answer(self, subject: str, data: bytes) -> None:
        selected = subject_matches(self.subjects.of(ModelSelected), subject)
        kind: type[Answer] = ModelSelected if selected else TaskRejected
        answer = kind.model_validate_json(data)
        answers = self.ledger.answers[answer.task_id]
        first = not answers
        answers[answer.event_id] = answer
        if first and isinstance(answer, ModelSelected) and answer.task_id in self.ledger.tasks:
            events = self.calls_of(answer)
            if events:
                self.pending_follow_ups += 1
                self.follow_ups.put_nowait(events)

    # --- what follows a decision ----------------------------------------------------------

    def calls_of(self, decision: ModelSelected) -> list[Event]:
        roll = self.rng.random()
        if roll < ABANDONED:
            return []
        events: list[Event] = []
        if roll < ABANDONED + RETRIED:
            events.append(self.a_call(decision, success=False))
        events.append(self.a_call(decision, success=True))
        if self.rng.random() < RATED:
            events.append(
                FeedbackRecorded(
                    task_id=decision.task_id,
                    scope=decision.scope,
                    model=decision.model,
                    task_type=decision.task_type,
                    quality=round(self.rng.random(), 3),
                )
            )
        return events

    def a_call(self, decision: ModelSelected, *, success: bool) -> CostRecorded:
        return CostRecorded(
            task_id=decision.task_id,
            scope=decision.scope,
            task_type=decision.task_type,
            model=decision.model,
            provider=decision.provider,
            input_tokens=self.rng.randint(20, 2_000),
            output_tokens=self.rng.randint(10, 800) if success else 0,
            cost_usd=Decimal(self.rng.randint(1_000, 300_000)).scaleb(-9),  # 0.000001 .. 0.0003, exact
            latency_ms=float(self.rng.randint(200, 9_000)),
            success=success,
            error_type=None if success else "rate_limit",
        )

    async def send_follow_ups(self) -> None:
        """A worker: one task's calls and rating at a time, in order."""
        while True:
            events = await self.follow_ups.get()
            for event in events:
                bare = self.rng.random() < BARE
                await self.publish(event, bare=bare)
                self.ledger.bare += bare
                if isinstance(event, CostRecorded):
                    self.ledger.costs.append(event)
                elif isinstance(event, FeedbackRecorded):
                    self.ledger.feedback.append(event)
            self.pending_follow_ups -= 1


def answer_kinds(answers: dict[UUID, dict[UUID, Answer]]) -> Counter[str]:
    """selected, and rejected by reason: each task's first answer."""
    kinds: Counter[str] = Counter()
    for by_id in answers.values():
        first = min(by_id.values(), key=lambda a: a.occurred_at)
        kinds["selected" if isinstance(first, ModelSelected) else f"rejected: {first.reason}"] += 1
    return kinds
