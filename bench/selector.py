"""Benchmark: the selector's decisions against real processes (all five services).

For each offered rate (100, 500 and 1,000 tasks/s by default), TaskArrived events are published
to JetStream open loop for a fixed time: sends follow a clock and never wait for decisions. A
core NATS subscription on ModelSelected and TaskRejected, taken before the first send, times
each decision in this process's clock. Per rate:

- tasks sent (and how far the sender slipped behind its schedule), decisions received within
  the wait for stragglers (selected / rejected), lost = sent - received;
- achieved decisions/s = received / (first publish .. last decision);
- end-to-end latency TaskArrived published -> decision received, p50/p90/p99/max (also measured
  from each send's scheduled time, which counts any slip of the sender);
- the selector's own ModelSelected.decision_latency_ms, p50/p99 (from picking the task up to
  building the decision: policy, cost.estimate, budget.reserve; not the queue, not the outbox);
- the selector consumer's backlog when sending started and stopped, the CPU seconds every
  service used, and how busy the machine was.

Tasks not decided within the wait are waited for afterwards (up to --drain-timeout) so that the
next rate starts on an empty queue; those are counted as late, the rest as never decided.

The mix: short factual questions, moderate analysis prompts, code snippets with a bug to fix and
a few long (~1,500 token) incident reports; task types normal, fix_bug and simple_query; 20 orgs,
2 teams each, 3 users per team; one generous monthly budget per org, created over the bus, so
every reservation does real work on a budget. A short warm-up at 20 tasks/s comes first.

    uv run python -m bench.selector [--rates 100,500,1000] [--seconds 10] [--wait 60]
        [--selector-replicas N] [--replicas-all N] [--drain-timeout 300]

Writes bench/results/selector.json (selector-N-replicas.json with --selector-replicas N,
selector-all-N-replicas.json with --replicas-all N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from bench.common import environment, latency_summary, write_results
from routewise.client import RoutewiseClient
from routewise.client.wire import msg_id_headers
from routewise.contracts.budget import Budget, CreateBudget, ThresholdSpec
from routewise.contracts.events import ModelSelected, Scope, TaskArrived, TaskRejected
from routewise.contracts.subjects import SERVICES, Subjects, durable
from routewise.dev.stack import Stack
from routewise.runtime.settings import Settings

ORGS, TEAMS_PER_ORG, USERS_PER_TEAM = 20, 2, 3
WARMUP_RATE, WARMUP_SECONDS = 20, 3

# --- the prompt mix -----------------------------------------------------------------------

SHORT_QUESTIONS = (
    "What is the capital of Australia?",
    "Who wrote 'One Hundred Years of Solitude'?",
    "How many bytes are in a kibibyte?",
    "What year did the Berlin Wall fall?",
    "What does HTTP status code 429 mean?",
    "What is the boiling point of water at sea level in Fahrenheit?",
    "Which planet has the most known moons?",
    "What is the difference between TCP and UDP, in one sentence?",
    "Define idempotency.",
    "What time zone is Tokyo in?",
    "Who painted The Night Watch?",
    "What is the chemical symbol for tungsten?",
    "How long is a marathon in kilometres?",
    "What does ACID stand for in databases?",
    "What is the default port of PostgreSQL?",
    "Translate 'thank you very much' into German.",
    "What is the largest desert in the world?",
    "Which format does ISO 8601 use for dates?",
    "Is a tomato a fruit or a vegetable?",
    "What is the speed of light in a vacuum?",
)

ANALYSIS_TEMPLATES = (
    "Compare {db_a} and {db_b} as the primary datastore for {use}. Evaluate the trade-offs in operational"
    " cost, latency under load and the team's learning curve, then recommend one for a team of {n} engineers.",
    "Analyze these quarterly figures and summarize the three most important trends. Revenue: {r1}M, {r2}M,"
    " {r3}M, {r4}M. Churn: {c1}%, {c2}%, {c3}%, {c4}%. New customers: {n1}, {n2}, {n3}, {n4}. What should the"
    " leadership team focus on next quarter, and what would you measure to know it worked?",
    "Review this product requirement and assess its risks: '{feature}'. List the open questions you would ask"
    " before estimating it, and propose a rollout plan with clear success criteria.",
    "Summarize the strongest arguments for and against {topic}, evaluate which side has the better evidence,"
    " and say what new evidence would change your conclusion.",
    "We are moving {system} from {db_a} to {db_b}. Design a step-by-step migration plan that avoids downtime,"
    " explain how you would verify the data, and how you would roll back if the cutover fails.",
)
DATABASES = ("PostgreSQL", "MySQL", "DynamoDB", "MongoDB", "Cassandra", "SQLite", "CockroachDB", "Redis")
USES = ("an order-management system", "a chat application", "time-series telemetry", "a billing ledger")
FEATURES = (
    "users can export every report to PDF with their company's branding",
    "the mobile app works offline and syncs when the connection comes back",
    "admins can set per-team spending limits that block requests over the limit",
    "search results are personalised from each user's recent activity",
)
TOPICS = ("a four-day work week", "monorepos for a 200-person engineering org", "remote-first hiring")
SYSTEMS = ("the invoicing service", "the user-profile store", "the event archive")

CODE_SNIPPETS = (
    (
        "This should return the moving average of the last k values, but it raises IndexError on short lists."
        " Fix it and add a test.",
        "```python\ndef moving_average(values, k):\n    out = []\n    for i in range(len(values)):\n"
        "        window = [values[i - j] for j in range(k)]\n        out.append(sum(window) / k)\n"
        "    return out\n```",
    ),
    (
        "The function returns before every file is uploaded; the caller sees an empty list. Why, and how do I fix it?",
        "```javascript\nasync function uploadAll(files) {\n  const urls = [];\n  files.forEach(async (f) => {\n"
        "    const res = await fetch('/upload', { method: 'POST', body: f });\n"
        "    urls.push((await res.json()).url);\n  });\n  return urls;\n}\n```",
    ),
    (
        "Customers with no orders are missing from this report, and totals look doubled for some. Fix the query.",
        "```sql\nSELECT c.id, c.name, SUM(o.total) AS spent, COUNT(p.id) AS payments\nFROM customers c\n"
        "JOIN orders o ON o.customer_id = c.id\nJOIN payments p ON p.customer_id = c.id\n"
        "WHERE o.created_at >= now() - interval '30 days'\nGROUP BY c.id, c.name;\n```",
    ),
    (
        "Every goroutine prints the same item, and sometimes the program exits before they finish. Fix both bugs.",
        "```go\nfunc process(items []string) {\n\tfor _, item := range items {\n\t\tgo func() {\n"
        '\t\t\tfmt.Println("processing", item)\n\t\t}()\n\t}\n}\n```',
    ),
    (
        "Items from one request show up in the next request's cart. Find the bug.",
        "```python\nclass Cart:\n    def __init__(self, items=[]):\n        self.items = items\n\n"
        "    def add(self, item):\n        self.items.append(item)\n        return self\n```",
    ),
    (
        "This retry helper never retries and swallows the error. Fix it so it retries with backoff and re-raises"
        ' the last error.\nTraceback (most recent call last):\n  File "client.py", line 41, in fetch\n'
        "    return retry(lambda: session.get(url))\nTypeError: 'NoneType' object is not callable",
        "```python\ndef retry(fn, attempts=3, delay=0.5):\n    for i in range(attempts):\n        try:\n"
        "            return fn\n        except Exception:\n            time.sleep(delay * i)\n```",
    ),
)

LOG_SERVICES = ("api-gateway", "checkout", "payments", "inventory", "auth", "search", "worker", "postgres")
LOG_MESSAGES = (
    "request completed status=200 duration_ms={ms}",
    "upstream timeout after {ms}ms calling payments:8443/charge",
    "connection pool exhausted (size=50, waiting={n})",
    "retrying job id={id} attempt={n}",
    "slow query took {ms}ms: SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC",
    "circuit breaker opened for dependency inventory after {n} failures",
    "memory usage at {n}% of limit, GC pause {ms}ms",
    "deploy {id} rolled out to {n} of 12 pods",
    "health check failed: readiness probe returned 503",
    "cache miss ratio {n}% over the last minute",
)
INCIDENT_NOTES = (
    "At 02:10 UTC the on-call engineer was paged for elevated checkout error rates.",
    "The deploy that went out at 01:55 changed the connection pool size and the payment client's timeout.",
    "Customers in the EU region reported failed payments and duplicate charge attempts.",
    "Rolling back the deploy reduced the error rate, but latency stayed high for another twenty minutes.",
    "The database CPU was saturated during the incident and several long-running queries were cancelled.",
    "A feature flag for the new inventory reservation flow was turned on for 50% of traffic the day before.",
)


def long_report(rng: random.Random) -> str:
    """An incident report of about 1,500 tokens: timeline notes and a log excerpt."""
    lines = [
        f"Incident INC-{rng.randint(1000, 9999)}: analyze the timeline and logs below. Identify the root cause,"
        " the contributing factors, and propose three follow-up actions with owners.",
        "",
        "Notes:",
    ]
    lines += [f"- {n}" for n in rng.sample(INCIDENT_NOTES, len(INCIDENT_NOTES))]
    lines += ["", "Logs:"]
    for i in range(46):
        message = rng.choice(LOG_MESSAGES).format(
            ms=rng.randint(3, 30_000), n=rng.randint(1, 99), id=uuid.UUID(int=rng.getrandbits(128)).hex[:12]
        )
        level = rng.choice(("INFO", "INFO", "WARN", "ERROR"))
        lines.append(
            f"2025-03-14T02:{i // 4 + 1:02d}:{rng.randint(0, 59):02d}Z {rng.choice(LOG_SERVICES)} {level} {message}"
        )
    return "\n".join(lines)


def analysis_prompt(rng: random.Random) -> str:
    db_a, db_b = rng.sample(DATABASES, 2)
    return rng.choice(ANALYSIS_TEMPLATES).format(
        db_a=db_a,
        db_b=db_b,
        use=rng.choice(USES),
        n=rng.randint(3, 40),
        feature=rng.choice(FEATURES),
        topic=rng.choice(TOPICS),
        system=rng.choice(SYSTEMS),
        **{f"r{i}": round(rng.uniform(8, 20), 1) for i in range(1, 5)},
        **{f"c{i}": round(rng.uniform(1, 6), 1) for i in range(1, 5)},
        **{f"n{i}": rng.randint(80, 900) for i in range(1, 5)},
    )


def code_prompt(rng: random.Random) -> str:
    ask, code = rng.choice(CODE_SNIPPETS)
    return f"{ask}\n\n{code}"


# (kind, weight): what share of tasks each kind of prompt is
MIX = (("short", 0.40), ("analysis", 0.30), ("code", 0.25), ("long", 0.05))


def make_task(rng: random.Random, scopes: list[Scope]) -> tuple[str, TaskArrived]:
    kind = rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    if kind == "short":
        prompt, task_type = rng.choice(SHORT_QUESTIONS), rng.choice(("simple_query", "simple_query", "normal"))
    elif kind == "analysis":
        prompt, task_type = analysis_prompt(rng), "normal"
    elif kind == "code":
        prompt, task_type = code_prompt(rng), "fix_bug"
    else:
        prompt, task_type = long_report(rng), "normal"
    return kind, TaskArrived(scope=rng.choice(scopes), task_type=task_type, prompt=prompt)


def prompt_tokens(prompts: list[str]) -> dict[str, int]:
    """Token counts (o200k) of a sample of the mix, to show what it is made of."""
    import bpe_openai

    enc = bpe_openai.get_encoding("o200k_base")
    counts = sorted(len(enc.encode(p)) for p in prompts)
    return {
        "p50": counts[len(counts) // 2],
        "p90": counts[int(len(counts) * 0.9)],
        "max": counts[-1],
        "mean": round(statistics.fmean(counts)),
    }


# --- bookkeeping --------------------------------------------------------------------------


@dataclass
class Decision:
    at: float
    kind: str  # "selected" | "rejected"
    internal_ms: float | None
    detail: str | None  # the tier selected, or the rejection's reason


@dataclass
class Ledger:
    """Every task sent and the first decision seen for it."""

    due: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    decided: dict[str, Decision] = field(default_factory=dict)
    duplicates: int = 0
    unknown: int = 0
    outstanding: set[str] = field(default_factory=set)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_decision(self, msg: Msg) -> None:
        now = time.perf_counter()
        try:
            body = json.loads(msg.data)
            task_id = str(body["task_id"])
        except (ValueError, KeyError, TypeError):
            self.unknown += 1
            return
        if task_id in self.decided:
            self.duplicates += 1
            return
        if task_id not in self.sent:
            self.unknown += 1
            return
        if "decision_latency_ms" in body:
            self.decided[task_id] = Decision(now, "selected", float(body["decision_latency_ms"]), body.get("tier"))
        else:
            self.decided[task_id] = Decision(now, "rejected", None, body.get("reason"))
        self.outstanding.discard(task_id)
        if not self.outstanding:
            self.all_in.set()

    async def wait_all(self, timeout: float) -> None:
        if self.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_in.wait(), timeout)


@dataclass
class Cpu:
    """CPU seconds of processes and of the machine, from /proc (Linux; zeros elsewhere)."""

    pids: dict[str, list[int]]

    @staticmethod
    def _process(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(busy, total) jiffies since boot."""
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return 0.0, 0.0
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return float(sum(values) - idle), float(sum(values))

    def sample(self) -> tuple[dict[str, float], tuple[float, float]]:
        return {name: sum(self._process(p) for p in pids) for name, pids in self.pids.items()}, self._machine()

    @staticmethod
    def spent(
        before: tuple[dict[str, float], tuple[float, float]], after: tuple[dict[str, float], tuple[float, float]]
    ) -> dict[str, Any]:
        (procs0, (busy0, total0)), (procs1, (busy1, total1)) = before, after
        return {
            "cpu_seconds": {name: round(procs1[name] - procs0[name], 2) for name in procs1},
            "machine_busy_percent": round(100 * (busy1 - busy0) / (total1 - total0), 1) if total1 > total0 else None,
        }


async def backlog(js: JetStreamContext, settings: Settings) -> int | None:
    """Messages the selector's durable consumer has yet to take or to ack."""
    subjects = settings.subjects
    try:
        info = await js.consumer_info(subjects.tasks_stream.name, durable("selector", subjects.of(TaskArrived)))
    except Exception:
        return None
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


# --- one offered rate ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    task_id: str
    subject: str
    data: bytes
    headers: dict[str, str]


def prepare(subjects: Subjects, tasks: list[TaskArrived]) -> list[Prepared]:
    """Each task ready to send, on its org's subject."""
    return [Prepared(str(t.task_id), subjects.event(t), t.model_dump_json().encode(), msg_id_headers(t)) for t in tasks]


async def offer(js: JetStreamContext, batch: list[Prepared], rate: float, ledger: Ledger) -> dict[str, Any]:
    """Publish ``batch`` at ``rate``/s on a clock, never waiting for an ack before the next send."""
    errors: list[str] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def send(p: Prepared, due: float) -> None:
        ledger.due[p.task_id] = due
        ledger.sent[p.task_id] = time.perf_counter()
        try:
            await js.publish(p.subject, p.data, headers=p.headers, timeout=30)
        except Exception as exc:
            errors.append(repr(exc))

    ledger.outstanding.update(p.task_id for p in batch)
    ledger.all_in.clear()
    start = time.perf_counter()
    for i, p in enumerate(batch):
        due = start + i / rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        task = asyncio.create_task(send(p, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    scheduled_end = time.perf_counter()
    await asyncio.gather(*in_flight)
    sent = [ledger.sent[p.task_id] for p in batch]
    slips = [ledger.sent[p.task_id] - ledger.due[p.task_id] for p in batch]
    span = max(sent) - min(sent)
    return {
        "send_seconds": round(scheduled_end - start, 3),
        "send_rate_per_s": round((len(batch) - 1) / span, 1) if span > 0 else None,
        "send_slip": latency_summary(slips),
        "publish_errors": len(errors),
        "first_publish_error": errors[0] if errors else None,
        "acks_done_after_s": round(time.perf_counter() - start, 3),
    }


async def run_rate(
    rw: RoutewiseClient,
    settings: Settings,
    ledger: Ledger,
    cpu: Cpu,
    rate: float,
    seconds: float,
    wait: float,
    drain_timeout: float,
    rng: random.Random,
    scopes: list[Scope],
) -> dict[str, Any]:
    js = rw.nc.jetstream()
    made = [make_task(rng, scopes) for _ in range(max(1, round(rate * seconds)))]
    kinds = Counter(kind for kind, _ in made)
    batch = prepare(settings.subjects, [task for _, task in made])
    ids = [p.task_id for p in batch]

    queued_before = await backlog(js, settings)
    cpu_before = cpu.sample()
    started = time.perf_counter()
    sending = await offer(js, batch, rate, ledger)
    cpu_sent = cpu.sample()
    queued_after_send = await backlog(js, settings)
    await ledger.wait_all(max(0.0, wait - (time.perf_counter() - started - sending["send_seconds"])))
    window_closed = time.perf_counter()
    cpu_after = cpu.sample()

    in_window = {t: ledger.decided[t] for t in ids if t in ledger.decided and ledger.decided[t].at <= window_closed}
    drain_started = time.perf_counter()
    if len(in_window) < len(ids):  # let the queue empty before the next rate
        await ledger.wait_all(drain_timeout)
    drained = time.perf_counter() - drain_started
    late = sum(1 for t in ids if t in ledger.decided and t not in in_window)
    never = sum(1 for t in ids if t not in ledger.decided)
    ledger.outstanding.difference_update(ids)

    first_publish = min(ledger.sent[t] for t in ids)
    e2e = [d.at - ledger.sent[t] for t, d in in_window.items()]
    from_schedule = [d.at - ledger.due[t] for t, d in in_window.items()]
    internal = [d.internal_ms / 1000 for d in in_window.values() if d.internal_ms is not None]
    last_decision = max((d.at for d in in_window.values()), default=first_publish)
    selected = [d for d in in_window.values() if d.kind == "selected"]
    rejected = [d for d in in_window.values() if d.kind == "rejected"]
    span = last_decision - first_publish
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "sent": len(ids),
        "mix": dict(sorted(kinds.items())),
        **sending,
        "received": len(in_window),
        "selected": len(selected),
        "rejected": len(rejected),
        "rejection_reasons": dict(Counter(d.detail for d in rejected)),
        "tiers_selected": dict(sorted(Counter(d.detail for d in selected).items(), key=lambda kv: str(kv[0]))),
        "lost": len(ids) - len(in_window),
        "late": late,
        "never_decided": never,
        "drain_seconds": round(drained, 1),
        "first_publish_to_last_decision_s": round(span, 3),
        "decisions_per_s": round(len(in_window) / span, 1) if span > 0 else None,
        "end_to_end": latency_summary(e2e) if e2e else None,
        "end_to_end_from_schedule": latency_summary(from_schedule) if from_schedule else None,
        "selector_internal": latency_summary(internal) if internal else None,
        "backlog_before": queued_before,
        "backlog_when_sending_stopped": queued_after_send,
        "cpu_while_sending": Cpu.spent(cpu_before, cpu_sent),
        "cpu_until_wait_ended": Cpu.spent(cpu_before, cpu_after),
    }


# --- the run ------------------------------------------------------------------------------


async def setup_budgets(rw: RoutewiseClient) -> list[Scope]:
    """One generous monthly budget per org (limit only, no lower thresholds); the org's scopes."""
    only_limit = [ThresholdSpec(percent=100, actions=["notify"])]
    scopes: list[Scope] = []
    for o in range(ORGS):
        org = f"org-{o:02d}"
        await rw.request(
            rw.subjects.budget_create,
            CreateBudget(
                name=f"bench {org}",
                scope_type="org",
                scope_id=org,
                period="monthly",
                limit_usd=Decimal(1_000_000),
                thresholds=only_limit,
                actor="bench",
            ),
            Budget,
        )
        scopes += [
            Scope(org_id=org, team_id=f"{org}-t{t}", user_id=f"{org}-t{t}-u{u}")
            for t in range(TEAMS_PER_ORG)
            for u in range(USERS_PER_TEAM)
        ]
    return scopes


async def run(
    settings: Settings, cpu: Cpu, rates: list[float], seconds: float, wait: float, drain: float
) -> dict[str, Any]:
    rng = random.Random(7)
    async with RoutewiseClient(settings) as rw:
        scopes = await setup_budgets(rw)
        ledger = Ledger()
        subs = [
            await rw.nc.subscribe(s, cb=ledger.on_decision, pending_msgs_limit=1_000_000)
            for s in (settings.subjects.of(ModelSelected), settings.subjects.of(TaskRejected))
        ]
        await rw.nc.flush()
        warmup = await run_rate(rw, settings, ledger, cpu, WARMUP_RATE, WARMUP_SECONDS, wait, drain, rng, scopes)
        print(f"warm-up: {warmup['received']}/{warmup['sent']} decided, p50 {_ms(warmup['end_to_end'], 'p50_ms')} ms")
        results = []
        for rate in rates:
            await asyncio.sleep(1)
            result = await run_rate(rw, settings, ledger, cpu, rate, seconds, wait, drain, rng, scopes)
            results.append(result)
            print(_row(result), flush=True)
        for sub in subs:
            await sub.unsubscribe()
        sample_rng = random.Random(11)
        mix_sample = [make_task(sample_rng, scopes)[1].prompt or "" for _ in range(1000)]
    return {
        "scopes": {"orgs": ORGS, "teams": ORGS * TEAMS_PER_ORG, "users": len(scopes), "budgets": ORGS},
        "mix": {
            "shares": dict(MIX),
            "task_types": {
                "short": "simple_query 2/3, normal 1/3",
                "analysis": "normal",
                "code": "fix_bug",
                "long": "normal",
            },
            "prompt_tokens_o200k": prompt_tokens(mix_sample),
        },
        "duplicate_decisions_seen": ledger.duplicates,
        "unknown_decisions_seen": ledger.unknown,
        "warmup": warmup,
        "rates": results,
    }


def _ms(summary: object, key: str) -> object:
    return summary.get(key) if isinstance(summary, dict) else "-"


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['offered_per_s']:>6g}/s offered: sent {r['sent']} (at {r['send_rate_per_s']}/s),"
        f" decided {r['received']} ({r['selected']} selected, {r['rejected']} rejected), lost {r['lost']}"
        f" (late {r['late']}, never {r['never_decided']});"
        f" {r['decisions_per_s']} decisions/s;"
        f" end-to-end p50 {_ms(r['end_to_end'], 'p50_ms')} p99 {_ms(r['end_to_end'], 'p99_ms')} ms;"
        f" selector p50 {_ms(r['selector_internal'], 'p50_ms')} p99 {_ms(r['selector_internal'], 'p99_ms')} ms;"
        f" backlog at stop {r['backlog_when_sending_stopped']};"
        f" machine {r['cpu_while_sending']['machine_busy_percent']}% busy while sending"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,500,1000", help="offered tasks/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of sending per rate")
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for stragglers after sending")
    parser.add_argument(
        "--drain-timeout", type=float, default=300, help="further seconds for late decisions before the next rate"
    )
    parser.add_argument("--selector-replicas", type=int, default=None, help="default: --replicas-all")
    parser.add_argument("--replicas-all", type=int, default=1, help="replicas of every service")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    replicas = dict.fromkeys(SERVICES, args.replicas_all)
    replicas["selector"] = args.selector_replicas or args.replicas_all
    servers = {
        "nats": "ROUTEWISE_NATS_URL" if os.environ.get("ROUTEWISE_NATS_URL") else "embedded",
        "postgres": "ROUTEWISE_DATABASE_URL" if os.environ.get("ROUTEWISE_DATABASE_URL") else "embedded",
    }
    with environment(replicas) as (env, stack):
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace, request_timeout=30)
        cpu = Cpu(_pids(stack))
        print(f"services: {replicas}; logs: {env.workdir / 'logs'}")
        result = asyncio.run(run(settings, cpu, rates, args.seconds, args.wait, args.drain_timeout))
    if args.replicas_all > 1:
        name = f"selector-all-{args.replicas_all}-replicas"
    elif replicas["selector"] > 1:
        name = f"selector-{replicas['selector']}-replicas"
    else:
        name = "selector"
    path = write_results(
        name,
        {
            "replicas": replicas,
            "servers": servers,
            "seconds_per_rate": args.seconds,
            "wait_s": args.wait,
            "logs": str(env.workdir / "logs"),
            **result,
        },
    )
    print(f"results: {path}")


def _pids(stack: Stack) -> dict[str, list[int]]:
    pids: dict[str, list[int]] = {"bench": [os.getpid()]}
    for key, sp in stack.processes.items():
        pids.setdefault(key.split("#")[0], []).append(sp.proc.pid)
    return pids


if __name__ == "__main__":
    main()
