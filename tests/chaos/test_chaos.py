"""Chaos: nothing lost, nothing doubled, while every part of Routewise is killed under load.

A stream of a few thousand tasks, costs and feedbacks over hard and soft budgets of three orgs
goes to the five services, as separate processes with two replicas of the selector and of
budget-enforcer, on a NATS and a Postgres of the test's own. During it each service process is
killed with SIGKILL once (and started again), NATS is restarted on the same port and store,
Postgres's postmaster is killed with SIGKILL (and started again: crash recovery), and Postgres, a
budget-enforcer and a selector replica are frozen (SIGSTOP) past the ack wait, so the messages in
flight are delivered a second time while their first delivery still runs (a quarter of the costs
and ratings carry their id in Nats-Msg-Id only: each must still be applied once). Then, through
the public answers (the bus, the SDK's requests):

- every task was answered once, with ModelSelected or TaskRejected; none twice;
- every cost was applied exactly once: each org's, team's and user's spend on budget-enforcer is
  the exact Decimal sum of the costs sent for it, with their count, and metrics (per org) and
  performance-tracker (per model) agree; every rating was applied once;
- each budget alerted exactly once for each threshold its final spend reached, for no other;
- no hold is left on any budget (each settled by its cost or expired).

The figures (events sent, faults, lost, doubled, dead letters by reason) are printed and written
to bench/results/chaos.json, failed or not. CI runs it as its own step: ``just test-chaos``.
``ROUTEWISE_CHAOS_TASKS``, ``_RATE`` and ``_SEED`` change the traffic (e.g. to reproduce a run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from routewise.client import RoutewiseClient
from routewise.contracts.budget import Budget, BudgetStatus, GetBudgetStatus
from routewise.contracts.events import BudgetAlert, ModelSelected, Scope, TaskRejected
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from routewise.contracts.performance import Performance, QueryPerformance
from routewise.runtime.bus import HEADER_REASON, HEADER_SERVICE, HEADER_SUBJECT
from routewise.runtime.settings import Settings
from tests.chaos.cluster import Cluster
from tests.chaos.traffic import BUDGETS, ORGS, Ledger, Traffic, answer_kinds, every_scope, narrowest

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

TASKS = int(os.environ.get("ROUTEWISE_CHAOS_TASKS", "1800"))
RATE = float(os.environ.get("ROUTEWISE_CHAOS_RATE", "12"))
SEED = int(os.environ.get("ROUTEWISE_CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
REPLICAS = {"selector": 2, "cost_predictor": 1, "budget_enforcer": 2, "performance_tracker": 1, "metrics": 1}
FAULTS = (  # (what, which): one after another, spread over the stream of tasks
    ("kill -9 selector", "selector"),
    ("kill -9 budget_enforcer", "budget_enforcer"),
    ("restart NATS", "nats"),
    ("kill -9 cost_predictor", "cost_predictor"),
    ("kill -9 selector (replica 2)", "selector#2"),
    ("kill -9 Postgres's postmaster", "postgres"),
    ("freeze Postgres (SIGSTOP) past the ack wait", "postgres-freeze"),
    ("freeze budget_enforcer (SIGSTOP) past the ack wait", "freeze:budget_enforcer"),
    ("freeze selector (replica 2) (SIGSTOP) past the ack wait", "freeze:selector#2"),
    ("kill -9 performance_tracker", "performance_tracker"),
    ("kill -9 budget_enforcer (replica 2)", "budget_enforcer#2"),
    ("kill -9 metrics", "metrics"),
)
SERVICE_ENV = {
    "ROUTEWISE_RESERVATION_TTL": "20",  # abandoned tasks' holds expire within the test
    "ROUTEWISE_ACK_WAIT": "20",  # what a killed process was handling comes back sooner than 60 s
    "ROUTEWISE_DB_POOL_SIZE": "8",  # seven processes within the embedded Postgres's 100 connections
}
SETTLE_S = 300.0
"""How long, after the last task was sent, everything may take to be answered and applied."""
LOGGED = (
    "message failed, will retry",
    "message dead-lettered",
    "conflicting duplicate",
    "outbox flush failed",
    "the bus connection is gone for good",
)
"""What the figures count in each service's log: how hard the faults hit (retries), and what to explain."""
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "chaos.json"


async def test_nothing_is_lost_or_doubled_while_every_part_is_killed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "chaos", REPLICAS, SERVICE_ENV, freeze_s=float(SERVICE_ENV["ROUTEWISE_ACK_WAIT"]) + 5)
    run = Run(cluster)
    try:
        await cluster.start()
        await run.go()
    finally:
        await asyncio.to_thread(cluster.stop)
        figures = run.figures()  # whatever happened: a run that broke down says how far it got
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
    assert not run.problems, "\n".join(run.problems[:50])
    assert figures["faults_injected"] == len(FAULTS)


def settings_of(cluster: Cluster) -> Settings:
    return Settings(nats_url=cluster.nats_url, namespace=cluster.namespace, request_timeout=10)


async def waited(check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    """Poll ``check`` until it holds or the monotonic ``deadline`` passes; whether it held."""
    while True:
        with contextlib.suppress(Exception):  # a service may still be catching up
            if await check():
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


@dataclass
class Run:
    cluster: Cluster
    ledger: Ledger = field(default_factory=Ledger)
    budgets: list[Budget] = field(default_factory=list)
    timings: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return settings_of(self.cluster)

    async def go(self) -> None:
        async with RoutewiseClient(self.settings) as rw:
            self.budgets = [await rw.request(rw.subjects.budget_create, p.create(), Budget) for p in BUDGETS]
        began = self.cluster.started_at = time.monotonic()  # faults are timed from here
        nc = await nats.connect(
            self.cluster.nats_url,
            name="chaos-application",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            error_cb=_quiet,
            disconnected_cb=_none,
        )
        traffic = Traffic(nc, self.settings.subjects, random.Random(SEED), self.ledger)
        subjects = self.settings.subjects
        background = [
            asyncio.create_task(traffic.read_answers(subjects.of(ModelSelected), "chaos-app-selected")),
            asyncio.create_task(traffic.read_answers(subjects.of(TaskRejected), "chaos-app-rejected")),
            *(asyncio.create_task(traffic.send_follow_ups()) for _ in range(4)),
            asyncio.create_task(self.supervise()),
        ]
        try:
            sending = asyncio.create_task(traffic.send_tasks(TASKS, RATE))
            await self.inject_faults(sending)
            await sending
            self.timings["sending_s"] = round(time.monotonic() - began, 1)
            await self.settle(traffic)
        finally:
            self.problems += [f"the application's {t.get_name()} ended: {t.exception()!r}" for t in _failed(background)]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await nc.close()
        await self.collect()
        self.check()
        self.timings["total_s"] = round(time.monotonic() - began, 1)

    async def inject_faults(self, sending: asyncio.Task[None]) -> None:
        for i, (what, which) in enumerate(FAULTS):
            due = (i + 1) * TASKS // (len(FAULTS) + 1)  # the faults spread evenly over the tasks
            await waited(_true_when(lambda due=due: len(self.ledger.tasks) >= due or sending.done()), math.inf)
            if sending.done() and sending.exception() is not None:  # ``await sending`` says why
                return
            await self.cluster.inject(what, which)

    async def supervise(self) -> None:
        while True:
            self.cluster.restart_exited()
            await asyncio.sleep(0.5)

    # --- waiting until everything is applied --------------------------------------------------

    async def settle(self, traffic: Traffic) -> None:
        """Wait (each with the one deadline) until every task is answered, every call and rating
        sent, applied by budget-enforcer, metrics and performance-tracker, and every hold gone."""
        deadline = time.monotonic() + SETTLE_S
        began = time.monotonic()
        ledger = self.ledger

        async def sent_all() -> bool:
            return not ledger.unanswered() and traffic.pending_follow_ups == 0

        async with RoutewiseClient(self.settings) as rw:
            steps: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
                ("answered_and_followed_up", sent_all),
                ("budget_enforcer_applied", lambda: self.budget_enforcer_applied(rw)),
                ("metrics_applied", lambda: self.metrics_applied(rw)),
                ("performance_applied", lambda: self.performance_applied(rw)),
                ("holds_gone", lambda: self.holds_gone(rw)),
            ]
            for name, check in steps:
                ok = await waited(check, deadline)
                self.timings[f"{name}_after_s"] = round(time.monotonic() - began, 1) if ok else None
                if not ok:
                    self.problems.append(f"not {name.replace('_', ' ')} within {SETTLE_S}s of the last task")

    async def budget_enforcer_applied(self, rw: RoutewiseClient) -> bool:
        counted = 0
        for org in ORGS:
            counted += (await _status(rw, Scope(org_id=org))).costs_recorded
        return counted >= len(self.ledger.costs)

    async def metrics_applied(self, rw: RoutewiseClient) -> bool:
        summary = await rw.request(rw.subjects.metrics_summary, GetMetricsSummary(), MetricsSummary)
        decided = summary.selected + summary.rejected
        return summary.costs_recorded >= len(self.ledger.costs) and decided >= len(self.ledger.tasks)

    async def performance_applied(self, rw: RoutewiseClient) -> bool:
        requests, rated = _performance_totals(await _performance(rw))
        return requests >= len(self.ledger.costs) and rated >= len(self.ledger.feedback)

    async def holds_gone(self, rw: RoutewiseClient) -> bool:
        for plan in BUDGETS:
            if any(v.reserved_usd != 0 for v in (await _status(rw, plan.scope)).budgets):
                return False
        return True

    # --- what the system says, once settled ----------------------------------------------------

    async def collect(self) -> None:
        async with RoutewiseClient(self.settings) as rw:
            subjects = rw.subjects
            self.found["status"] = {s: await _status(rw, s) for s in every_scope()}
            self.found["metrics"] = {
                org: await rw.request(subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
                for org in ORGS
            }
            self.found["performance"] = _performance_totals(await _performance(rw))
            events = subjects.events_stream.name
            self.found["answers"] = await read_stream(rw.nc, events, subjects.of(ModelSelected)) + await read_stream(
                rw.nc, events, subjects.of(TaskRejected)
            )
            self.found["alerts"] = await read_stream(rw.nc, subjects.alerts_stream.name, f"{subjects.budget_alerts}.>")
            self.found["dead_letters"] = await read_stream(
                rw.nc, subjects.dead_letter_stream.name, f"{subjects.namespace}.deadletter.>"
            )

    def check(self) -> None:
        self.found["lost"], self.found["doubled"] = Counter[str](), Counter[str]()
        self.check_answers()
        self.check_spend()
        self.check_metrics_and_performance()
        self.check_alerts()
        self.check_holds()
        if self.found["dead_letters"]:  # every event sent was valid: a dead letter is one not applied
            self.problems.append(f"{len(self.found['dead_letters'])} valid events dead-lettered (see dead_letters)")

    def _lost(self, what: str, n: int) -> None:
        self.found["lost"][what] += max(n, 0)
        self.found["doubled"][what] += max(-n, 0)

    def check_answers(self) -> None:
        """Every task answered once (from the stream itself, not only what the application read)."""
        by_task: dict[UUID, set[UUID]] = {}
        republished = 0
        for msg in self.found["answers"]:
            payload = json.loads(msg.data)
            ids = by_task.setdefault(UUID(payload["task_id"]), set())
            republished += UUID(payload["event_id"]) in ids
            ids.add(UUID(payload["event_id"]))
        unanswered = [t for t in self.ledger.tasks if t not in by_task]
        twice = {t: ids for t, ids in by_task.items() if len(ids) > 1}
        self.found["lost"]["tasks (no decision)"] += len(unanswered)
        self.found["doubled"]["tasks (decided twice)"] += len(twice)
        self.found["doubled"]["decisions (the same event twice in the stream)"] += republished
        if unanswered:
            self.problems.append(f"{len(unanswered)} tasks never answered, e.g. {unanswered[:5]}")
        if twice:
            self.problems.append(f"{len(twice)} tasks answered more than once, e.g. {list(twice.items())[:3]}")
        if republished:
            self.problems.append(f"{republished} decisions are in the events stream twice")

    def check_spend(self) -> None:
        """Each scope's spend and count of costs on budget-enforcer: exactly what was sent for it."""
        for scope, status in self.found["status"].items():
            want_usd, want_n = self.ledger.spend(scope)
            if scope.team_id is None:  # orgs partition the costs: count losses and doubles once
                self._lost("costs (budget-enforcer)", want_n - status.costs_recorded)
            if status.spent_usd != want_usd or status.costs_recorded != want_n:
                self.problems.append(
                    f"budget-enforcer: {narrowest(scope)} spent {status.spent_usd} over {status.costs_recorded} costs;"
                    f" sent {want_usd} over {want_n}"
                )
            for view in status.budgets:
                if (view.scope_type, view.scope_id) == narrowest(scope) and view.current_spend_usd != want_usd:
                    self.problems.append(f"budget {view.name}: spend {view.current_spend_usd}, sent {want_usd}")

    def check_metrics_and_performance(self) -> None:
        for org, summary in self.found["metrics"].items():
            want_usd, want_n = self.ledger.spend(Scope(org_id=org))
            tasks = sum(1 for s in self.ledger.tasks.values() if s.org_id == org)
            self._lost("costs (metrics)", want_n - summary.costs_recorded)
            self._lost("tasks (metrics)", tasks - summary.tasks)
            if (summary.actual_cost_usd, summary.costs_recorded, summary.tasks) != (want_usd, want_n, tasks):
                self.problems.append(
                    f"metrics: org {org}: {summary.tasks} tasks, {summary.actual_cost_usd} over"
                    f" {summary.costs_recorded} costs; sent {tasks} tasks, {want_usd} over {want_n} costs"
                )
            if summary.selected + summary.rejected != summary.tasks:
                self.problems.append(
                    f"metrics: org {org}: {summary.tasks} tasks but {summary.selected} selected"
                    f" and {summary.rejected} rejected"
                )
        requests, rated = self.found["performance"]
        self._lost("costs (performance-tracker)", len(self.ledger.costs) - requests)
        self._lost("feedback (performance-tracker)", len(self.ledger.feedback) - rated)
        if (requests, rated) != (len(self.ledger.costs), len(self.ledger.feedback)):
            self.problems.append(
                f"performance-tracker: {requests} calls and {rated} ratings;"
                f" sent {len(self.ledger.costs)} and {len(self.ledger.feedback)}"
            )

    def check_alerts(self) -> None:
        """Exactly one alert per threshold each budget's final spend reached; none for another."""
        fired = Counter(
            (a.budget_id, a.period_start, a.threshold_percent)
            for a in (BudgetAlert.model_validate_json(m.data) for m in self.found["alerts"])
        )
        self.found["alerts_fired"] = sum(fired.values())
        for budget in self.budgets:
            spent = self._spend_of(budget)
            reached = {t.percent for t in budget.thresholds if spent * 100 >= t.percent * budget.limit_usd}
            alerted = Counter({t: n for (b, _, t), n in fired.items() if b == budget.id})
            missing, twice = reached - set(alerted), {t: n for t, n in alerted.items() if n > 1}
            unexpected = set(alerted) - reached
            self._lost("alerts", len(missing))
            self.found["doubled"]["alerts"] += sum(n - 1 for n in twice.values())
            self.found.setdefault("budgets_final", []).append(
                {
                    "budget": budget.name,
                    "limit_usd": str(budget.limit_usd),
                    "spent_usd": str(spent),
                    "percent": f"{spent * 100 / budget.limit_usd:.2f}",
                    "thresholds_reached": sorted(reached),
                    "alerts": dict(sorted(alerted.items())),
                }
            )
            if missing or twice or unexpected:
                self.problems.append(
                    f"budget {budget.name} at {spent} of {budget.limit_usd}: thresholds reached {sorted(reached)},"
                    f" alerts {dict(alerted)} (missing {sorted(missing)}, unexpected {sorted(unexpected)})"
                )

    def _spend_of(self, budget: Budget) -> Decimal:
        for status in self.found["status"].values():
            for view in status.budgets:
                if view.budget_id == budget.id:
                    return view.current_spend_usd
        raise AssertionError(f"no status shows budget {budget.name}")

    def check_holds(self) -> None:
        held = {
            view.name: view.reserved_usd
            for status in self.found["status"].values()
            for view in status.budgets
            if view.reserved_usd != 0
        }
        self.found["holds_left_usd"] = str(sum(held.values(), Decimal(0)))
        if held:
            self.problems.append(f"holds left after settlement and expiry: {held}")

    # --- the report ------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        dead = Counter((m.headers or {}).get(HEADER_REASON, "?") for m in self.found.get("dead_letters", []))
        dead_where = Counter(
            f"{(m.headers or {}).get(HEADER_SERVICE, '?')} {(m.headers or {}).get(HEADER_SUBJECT, '?')}"
            f" {(m.headers or {}).get(HEADER_REASON, '?')}"
            for m in self.found.get("dead_letters", [])
        )
        return {
            "test": "tests/chaos/test_chaos.py",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "seed": SEED,
            "replicas": REPLICAS,
            "offered_tasks_per_s": RATE,
            "service_env": SERVICE_ENV,
            "budgets": [f"{p.mode} {narrowest(p.scope)} ${p.limit_usd}" for p in BUDGETS],
            "events_sent": self.ledger.sent(),
            "publish_retries": self.ledger.publish_retries,
            "faults_injected": len(self.cluster.faults),
            "faults": [asdict(f) for f in self.cluster.faults],
            "unexpected_exits": [asdict(e) for e in self.cluster.exits],
            "answers": dict(sorted(answer_kinds(self.ledger.answers).items())),
            "budgets_final": self.found.get("budgets_final"),
            "alerts_fired": self.found.get("alerts_fired"),
            "lost": dict(self.found.get("lost", {})),
            "doubled": dict(self.found.get("doubled", {})),
            "lost_total": sum(self.found.get("lost", Counter()).values()),
            "doubled_total": sum(self.found.get("doubled", Counter()).values()),
            "holds_left_usd": self.found.get("holds_left_usd"),
            "dead_letters": dict(dead),
            "dead_letters_by_service_subject_reason": dict(dead_where),
            "service_logs": self.cluster.log_counts(*LOGGED),
            "timings_s": self.timings,
            "problems": self.problems,
        }


def _failed(tasks: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    return [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]


def _true_when(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def _status(rw: RoutewiseClient, scope: Scope) -> BudgetStatus:
    """The chain form (``scope``): its narrowest level is named however this version names it."""
    return await rw.request(rw.subjects.budget_status, GetBudgetStatus(scope=scope), BudgetStatus)


async def _performance(rw: RoutewiseClient) -> Performance:
    return await rw.request(rw.subjects.performance_query, QueryPerformance(window="all"), Performance)


def _performance_totals(performance: Performance) -> tuple[int, int]:
    """(calls, ratings) performance-tracker counted over every model."""
    return sum(s.requests for s in performance.stats), sum(s.quality_samples for s in performance.stats)


async def read_stream(nc: NatsClient, stream: str, subject: str) -> list[Msg]:
    """Every message of ``subject`` in ``stream``, from the first (an ephemeral consumer)."""
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=60)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    msgs: list[Msg] = []
    try:
        while True:
            try:
                batch = await sub.fetch(500, timeout=2)
            except TimeoutError:
                return msgs
            msgs += batch
            if batch[-1].metadata.num_pending == 0:
                return msgs
    finally:
        await sub.unsubscribe()


async def _quiet(_: Exception) -> None:
    return None


async def _none() -> None:
    return None
