"""Benchmark: the fast path — what one routing decision costs in CPU, everything included, and how
soon it comes back (issue 15's measurement).

The stack is started the way `routewise dev` starts it: an embedded nats-server locked with the
services' users (``routewise.runtime.bus_users.service_users``; the streams made by the
operator), an embedded Postgres, and the five services as separate processes
(``routewise.dev.stack.Stack``). It runs in two configurations, one after the other:

- ``on`` (what `routewise dev` runs): nats-server syncs every write to disk before acknowledging
  it (``sync_interval: always``), Postgres commits with fsync and synchronous_commit on;
- ``off``: nats-server's default sync (every two minutes), Postgres ``fsync=off`` and
  ``synchronous_commit=off`` — the same work without waiting for the disk, so the price of
  durability shows.

In each, after one budget per org (bench.selector's 20 orgs, 40 teams, 120 users) and a warm-up,
the stack's idle cost is measured (5 s, nothing sent) and a second, short warm-up follows. Then,
for each offered rate, TaskArrived events (bench.selector's mix) are published open loop for
``--seconds`` and timed to their ModelSelected or TaskRejected. A run's window goes from its
first send until every task is decided and every durable consumer of the namespace's streams
has caught up, so its CPU is all the work its tasks caused (metrics' bookkeeping included).
Per run:

- ``decided_per_s``: decisions / (first send → last decision); ``p50_ms``/``p99_ms``:
  TaskArrived published → decision received (``latency`` has the rest of the distribution);
- ``cpu_ms_per_decision``: CPU of every process of the stack over the window / tasks decided,
  from /proc/<pid>/stat (utime + stime, plus cutime + cstime of reaped children) summed over each
  process's tree: the five services, nats-server, and Postgres' postmaster with every backend and
  auxiliary process. ``cpu_ms_by_process`` is the same per process; ``idle_share_ms_per_decision``
  is what the stack spends doing nothing (its idle rate) over the window, per decision; this
  process (the load generator) is not counted (``bench_cpu_ms_per_decision``), nor is anything
  else on the machine (``others_cpu_percent``: the machine's busy share not ours);
- RSS and PSS per process, idle and the peak under load (sampled every 2 s; Postgres' RSS counts
  its shared buffers once per backend, its PSS shares them out);
- nats-server messages and bytes in/out per decision (/varz; this process's own publish, its
  acknowledgement and the decision it receives are included: 1 in, 2 out per task);
- Postgres transactions (each statement outside a transaction is one), tuples written, WAL records
  and WAL syncs per decision (pg_stat_database, pg_stat_wal); round trips are not counted (the
  embedded server has no pg_stat_statements);
- the machine's load average before the run and its busy share during it.

The rates are run in ``--repeat`` rounds (3 by default: 25, 50, 100, 200, 25, 50, ...), so a
drift of the machine spreads over all of them; a rate's headline figures (decided/s, p50, p99,
CPU per decision, CPU by process) are the medians of its repetitions, its other details those of
the repetition with the median CPU, and ``repeats`` lists each one's. A run kept up when every
task was decided, at a rate within 10 % of the offered one, with a p99 under a second. If the
last rate kept up in the first round, the rate is doubled until one does not or ``--max-rate``
is passed. ``throughput_at_p99_ms`` reads the curve off the ``on`` runs: the best decided/s of a
run that kept up with a p99 within each bound (among the rates tried).

Last, LiteLLM's proxy (installed as bench.gateway installs it: from PyPI into its own venv, no
database) routes over three deployments of one model to the mock provider at
``--litellm-rate`` requests/s for ``--seconds``, ``--repeat`` times; its CPU per request (the
proxy's process tree from /proc, the median of the rounds) gives
``litellm_cpu_ms_per_request``, and ``routewise_over_litellm`` is Routewise's CPU per decision
at that offered rate over it.

    uv run --frozen python -m bench.fast_path [--rates 25,50,100,200] [--seconds 10]
        [--repeat 3] [--fsync on,off] [--max-rate 1600] [--litellm-rate 50] [--no-litellm]

Writes bench/results/fast_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from nats.js.client import JetStreamContext

from bench import gateway as gw
from bench.common import latency_summary, write_results
from bench.selector import WARMUP_RATE, WARMUP_SECONDS, Ledger, make_task, offer, prepare, setup_budgets
from routewise.client import RoutewiseClient
from routewise.contracts.catalog import ListModels, ModelEntry, ModelList, RegisterModel
from routewise.contracts.events import ModelSelected, Scope, TaskRejected, Tier
from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from routewise.dev.provision import dsn_with, provision
from routewise.dev.stack import Stack
from routewise.runtime.bus_users import new_password, operator_url, service_users
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams

FIVE = tuple(s for s in SERVICES if s != "gateway")
"""The services a decision over the bus goes through (the gateway is not on this path)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 5.0
SETTLE_TIMEOUT = 90.0
LITELLM_DEPLOYMENTS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")
LITELLM_MODEL = "bench-model"


# --- processes, from /proc -------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds of the process and of its reaped children)} of every process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # gone since the scan
            continue
        fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        # fields[1] is ppid (stat field 4); fields[11:15] utime, stime, cutime, cstime (fields 14-17)
        table[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / CLK_TCK)
    return table


def descendants(root: int, table: dict[int, tuple[int, float]]) -> list[int]:
    """``root`` and every live process under it."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo += children[pid]
    return found


def tree_cpu(root: int, table: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of ``root``'s tree: each live process's own and its reaped children's, so a
    backend that ended (its time now in the postmaster's cutime) still counts, once."""
    return sum(table[pid][1] for pid in descendants(root, table))


def _kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Processes:
    """The processes measured, by name, each the root of a tree."""

    roots: dict[str, int]

    def cpu(self) -> dict[str, float]:
        table = proc_table()
        return {name: tree_cpu(pid, table) for name, pid in self.roots.items()}

    def memory(self) -> dict[str, tuple[float, float]]:
        """{name: (RSS MiB, PSS MiB)} summed over each tree (PSS shares Postgres' shared buffers fairly)."""
        table = proc_table()
        out = {}
        for name, root in self.roots.items():
            pids = descendants(root, table)
            rss = sum(_kib(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids)
            pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
            out[name] = (round(rss / 1024, 1), round(pss / 1024, 1))
        return out


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class MemoryPeaks:
    """Samples the processes' memory every ``every`` seconds while running; keeps each one's peak.
    (Reading Postgres' smaps costs this process some CPU: every 0.5 s it was ~2 % of a core.)"""

    def __init__(self, processes: Processes, every: float = 2.0):
        self.processes, self.every = processes, every
        self.peak: dict[str, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            for name, (rss, pss) in self.processes.memory().items():
                old = self.peak.get(name, (0.0, 0.0))
                self.peak[name] = (max(old[0], rss), max(old[1], pss))
            await asyncio.sleep(self.every)

    def __enter__(self) -> MemoryPeaks:
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task:
            self._task.cancel()


# --- the servers and the stack ----------------------------------------------------------------


@dataclass
class Servers:
    nats: EmbeddedNats
    operator_url: str
    namespace: str
    admin_dsn: str
    database: str
    dsns: dict[str, str]
    postmaster: int
    settings: dict[str, str]


async def _prepare(operator: Settings, admin_dsn: str, database: str, durable: bool) -> tuple[dict[str, str], dict]:
    """As `routewise dev` does: the streams made by the operator, each service's role and schema.
    Without ``durable``, Postgres stops waiting for the disk (reloaded, no restart)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not durable:
            await conn.execute("ALTER SYSTEM SET fsync = off")
            await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            await conn.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
        }
    finally:
        await conn.close()
    async with RoutewiseClient(operator) as rw:
        await ensure_streams(rw.nc.jetstream(), operator)
    return await provision(admin_dsn, database), settings


@contextlib.contextmanager
def servers(workdir: Path, *, durable: bool) -> Iterator[Servers]:
    """nats-server locked as `routewise dev` locks it, and an embedded Postgres, both thrown away after."""
    password, namespace = new_password(), f"bench{uuid.uuid4().hex[:8]}"
    nats = EmbeddedNats(workdir / "nats", durable=durable, users=service_users(password, namespace))
    postgres = EmbeddedPostgres(workdir / "pg", keep=False)
    try:
        url = operator_url(nats.start(), password)
        admin = postgres.start()
        database = "routewise"
        operator = Settings(nats_url=url, namespace=namespace)
        dsns, settings = asyncio.run(_prepare(operator, admin, database, durable))
        postmaster = int((workdir / "pg" / "postmaster.pid").read_text().split()[0])
        yield Servers(nats, url, namespace, admin, database, dsns, postmaster, settings)
    finally:
        nats.stop()
        postgres.stop()


@contextlib.contextmanager
def stack(srv: Servers, log_dir: Path) -> Iterator[Stack]:
    """The five services, each a process logging in as its own bus user (Stack derives it)."""
    st = Stack(srv.operator_url, srv.dsns, srv.namespace, log_dir, services=FIVE)
    try:
        st.start()
        st.wait_ready(120)
        yield st
    finally:
        st.stop()


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Counters:
    """What the servers count: nats-server's /varz and Postgres' statistics views."""

    monitor_url: str
    pg: asyncpg.Connection
    database: str
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5))

    async def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            varz = (await self.http.get(f"{self.monitor_url}/varz")).json()
            out |= {f"nats_{k}": float(varz[k]) for k in ("in_msgs", "out_msgs", "in_bytes", "out_bytes")}
        await self.pg.execute("SELECT pg_stat_clear_snapshot()")
        row = await self.pg.fetchrow(
            "SELECT xact_commit + xact_rollback AS transactions, xact_commit AS commits,"
            " tup_inserted + tup_updated + tup_deleted AS tuples_written"
            " FROM pg_stat_database WHERE datname = $1",
            self.database,
        )
        if row:
            out |= {f"pg_{k}": float(v) for k, v in row.items()}
        with contextlib.suppress(asyncpg.PostgresError):
            out["pg_wal_records"] = float(await self.pg.fetchval("SELECT wal_records FROM pg_stat_wal"))
        with contextlib.suppress(asyncpg.PostgresError):  # PostgreSQL 14-17; 18 moved it to pg_stat_io
            out["pg_wal_syncs"] = float(await self.pg.fetchval("SELECT wal_sync FROM pg_stat_wal"))
        return out


async def pending(js: JetStreamContext, settings: Settings) -> int:
    """Messages every durable consumer of the namespace's streams has yet to take or to ack."""
    total = 0
    for stream in settings.subjects.streams:
        try:
            infos = await js.consumers_info(stream.name)
        except Exception:  # a stream nobody has written yet
            continue
        total += sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in infos)
    return total


async def settle(js: JetStreamContext, settings: Settings, timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until every consumer has caught up (twice in a row); the seconds it took."""
    started = time.perf_counter()
    quiet = 0
    while time.perf_counter() - started < timeout:
        quiet = quiet + 1 if await pending(js, settings) == 0 else 0
        if quiet >= 2:
            break
        await asyncio.sleep(0.25)
    return time.perf_counter() - started


def per(total: float, n: int, digits: int = 2) -> float | None:
    return round(total / n, digits) if n else None


@dataclass
class Bench:
    rw: RoutewiseClient
    settings: Settings
    processes: Processes
    counters: Counters
    scopes: list[Scope]
    ledger: Ledger
    rng: random.Random
    idle_cpu_per_s: dict[str, float] = field(default_factory=dict)

    async def idle(self, seconds: float = IDLE_SECONDS) -> dict[str, Any]:
        """The stack's CPU per second with nothing sent, and its memory."""
        js = self.rw.nc.jetstream()
        await settle(js, self.settings)
        await asyncio.sleep(1)
        cpu0, t0 = self.processes.cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, took = self.processes.cpu(), time.perf_counter() - t0
        self.idle_cpu_per_s = {n: (cpu1[n] - cpu0[n]) / took for n in cpu1}
        memory = self.processes.memory()
        return {
            "cpu_ms_per_s": {n: round(v * 1000, 1) for n, v in self.idle_cpu_per_s.items()},
            "cpu_ms_per_s_total": round(sum(self.idle_cpu_per_s.values()) * 1000, 1),
            "rss_mb": {n: m[0] for n, m in memory.items()},
            "pss_mb": {n: m[1] for n, m in memory.items()},
        }

    async def run(self, rate: float, seconds: float, wait: float) -> dict[str, Any]:
        js = self.rw.nc.jetstream()
        made = [make_task(self.rng, self.scopes) for _ in range(max(1, round(rate * seconds)))]
        batch = prepare(self.settings.subjects, [task for _, task in made])
        ids = [p.task_id for p in batch]
        await settle(js, self.settings)
        await asyncio.sleep(1)
        load_before = load_average()
        counted0 = await self.counters.read()
        cpu0, own0, machine0, t0 = self.processes.cpu(), own_cpu(), machine(), time.perf_counter()
        with MemoryPeaks(self.processes) as memory:
            sending = await offer(js, batch, rate, self.ledger)
            await self.ledger.wait_all(wait)
            all_decided = time.perf_counter()
            settled = await settle(js, self.settings)
        cpu1, own1, machine1, t1 = self.processes.cpu(), own_cpu(), machine(), time.perf_counter()
        await asyncio.sleep(1.2)  # backends flush their statistics at most once a second
        counted1 = await self.counters.read()
        self.ledger.outstanding.difference_update(ids)

        decided = {t: self.ledger.decided[t] for t in ids if t in self.ledger.decided}
        n = len(decided)
        e2e = [d.at - self.ledger.sent[t] for t, d in decided.items()]
        from_schedule = [d.at - self.ledger.due[t] for t, d in decided.items()]
        internal = [d.internal_ms / 1000 for d in decided.values() if d.internal_ms is not None]
        first = min(self.ledger.sent[t] for t in ids)
        last = max((d.at for d in decided.values()), default=first)
        window = t1 - t0
        cpu = {name: cpu1[name] - cpu0[name] for name in cpu1}
        ours = sum(cpu.values()) + (own1 - own0)
        busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
        latency = latency_summary(e2e) if e2e else {}
        decided_per_s = round(n / (last - first), 1) if last > first else None
        delta = {k: counted1[k] - counted0[k] for k in counted1 if k in counted0}
        result = {
            "offered": rate,
            "decided_per_s": decided_per_s,
            "p50_ms": latency.get("p50_ms"),
            "p99_ms": latency.get("p99_ms"),
            "cpu_ms_per_decision": per(sum(cpu.values()) * 1000, n),
            "cpu_ms_by_process": {name: per(v * 1000, n) for name, v in cpu.items()},
            "sent": len(ids),
            "decided": n,
            "selected": sum(1 for d in decided.values() if d.kind == "selected"),
            "rejected": dict(Counter(d.detail for d in decided.values() if d.kind == "rejected")),
            "lost": len(ids) - n,
            "seconds": seconds,
            "send_rate_per_s": sending["send_rate_per_s"],
            "publish_errors": sending["publish_errors"],
            "latency": latency,
            "latency_from_schedule_p99_ms": latency_summary(from_schedule)["p99_ms"] if from_schedule else None,
            "selector_internal": latency_summary(internal) if internal else None,
            "window_s": round(window, 2),
            "last_decision_after_first_send_s": round(last - first, 2),
            "consumers_caught_up_after_last_decision_s": round(settled, 2),
            "decided_before_window_end_s": round(t1 - all_decided, 2),
            "idle_share_ms_per_decision": per(sum(self.idle_cpu_per_s.values()) * window * 1000, n),
            "bench_cpu_ms_per_decision": per((own1 - own0) * 1000, n),
            "rss_mb_peak": {name: m[0] for name, m in memory.peak.items()},
            "pss_mb_peak": {name: m[1] for name, m in memory.peak.items()},
            "nats_per_decision": {
                key.removeprefix("nats_"): per(delta[key], n, 1) for key in sorted(delta) if key.startswith("nats_")
            },
            "postgres_per_decision": {
                key.removeprefix("pg_"): per(delta[key], n) for key in sorted(delta) if key.startswith("pg_")
            },
            "machine": {
                "load_1m_before": load_before,
                "busy_percent": round(100 * busy / total, 1) if total else None,
                "others_cpu_percent": round(100 * max(0.0, busy - ours) / total, 1) if total else None,
            },
        }
        result["kept_up"] = bool(
            n == len(ids) and decided_per_s and decided_per_s >= 0.9 * rate and (result["p99_ms"] or 0) < 1000
        )
        return result


@dataclass(frozen=True)
class Plan:
    rates: tuple[float, ...]
    seconds: float
    wait: float
    max_rate: float
    repeat: int
    catalog: int = 0
    """Models registered at run time before the runs, so the catalog holds this many (0: as shipped)."""
    budgets: int = 0
    """Budgets of other orgs added before the runs (0: only the bench's own)."""


async def grow_catalog(rw: RoutewiseClient, settings: Settings, models: int) -> int:
    """Register priced models (none in any policy) until the catalog holds ``models``; how many it holds."""
    listed = await rw.request(settings.subjects.cost_models_list, ListModels(), ModelList)
    have = len(listed.models)
    for i in range(max(models - have, 0)):
        await rw.request(
            settings.subjects.cost_models_register,
            RegisterModel(
                id=f"bench-model-{i:04d}",
                provider="bench",
                tier=list(Tier)[i % len(Tier)],
                quality_prior=0.5,
                context_window=128_000,
                input_mtok=Decimal("0.5"),
                output_mtok=Decimal("1.5"),
                actor="bench",
            ),
            ModelEntry,
        )
    return len((await rw.request(settings.subjects.cost_models_list, ListModels(), ModelList)).models)


async def add_budgets(dsn: str, budgets: int) -> int:
    """``budgets`` monthly budgets of other orgs, written straight into budget-enforcer's table (the
    bench's set-up, not a service: creating 100,000 over the bus would take longer than the run)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO budget_enforcer.budgets (id, name, scope_type, scope_id, period, timezone, starts_at,
                   limit_usd, hard, thresholds)
               SELECT gen_random_uuid(), 'other ' || i, 'org', 'other-' || i, 'monthly', 'UTC', now(), 100, true,
                   '[{"percent": 100, "actions": ["notify"]}]'::jsonb
               FROM generate_series(1, $1) AS i""",
            budgets,
        )
        return int(await conn.fetchval("SELECT count(*) FROM budget_enforcer.budgets"))
    finally:
        await conn.close()


HEADLINE = ("decided_per_s", "p50_ms", "p99_ms", "cpu_ms_per_decision")


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def median_run(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One rate's repetitions as one run: the headline figures (and the CPU by process) are each
    the median over the repetitions; the other details are those of the repetition whose CPU per
    decision is the median; ``repeats`` lists every repetition's headline figures."""
    if len(repeats) == 1:
        return repeats[0]
    ordered = sorted(repeats, key=lambda r: r["cpu_ms_per_decision"] or 0)
    out = dict(ordered[len(ordered) // 2])
    out["details_from_round"] = out.pop("round")
    for key in HEADLINE:
        out[key] = _median([r[key] for r in repeats])
    out["cpu_ms_by_process"] = {
        name: _median([r["cpu_ms_by_process"].get(name) for r in repeats]) for name in out["cpu_ms_by_process"]
    }
    out["kept_up"] = sum(bool(r["kept_up"]) for r in repeats) * 2 > len(repeats)
    out["repeats"] = [
        {
            "round": r["round"],
            **{k: r[k] for k in HEADLINE},
            "lost": r["lost"],
            "machine_busy_percent": r["machine"]["busy_percent"],
            "others_cpu_percent": r["machine"]["others_cpu_percent"],
        }
        for r in repeats
    ]
    return out


async def measure(srv: Servers, st: Stack, plan: Plan) -> dict:
    settings = Settings(nats_url=srv.operator_url, namespace=srv.namespace, request_timeout=30)
    roots = {key: sp.proc.pid for key, sp in st.processes.items()}
    roots |= {"nats-server": srv.nats.proc.pid if srv.nats.proc else 0, "postgres": srv.postmaster}
    pg = await asyncpg.connect(srv.admin_dsn)  # the "postgres" database: its queries are not the bench's
    try:
        async with RoutewiseClient(settings) as rw:
            scopes = await setup_budgets(rw)
            sizes = {"catalog_models": await grow_catalog(rw, settings, plan.catalog)}
            if plan.budgets:
                sizes["budgets"] = await add_budgets(dsn_with(srv.admin_dsn, database=srv.database), plan.budgets)
            print(f"  sizes: {sizes}", flush=True)
            ledger = Ledger()
            subs = [
                await rw.nc.subscribe(s, cb=ledger.on_decision, pending_msgs_limit=1_000_000)
                for s in (settings.subjects.of(ModelSelected), settings.subjects.of(TaskRejected))
            ]
            await rw.nc.flush()
            counters = Counters(srv.nats.monitor_url, pg, srv.database)
            bench = Bench(rw, settings, Processes(roots), counters, scopes, ledger, random.Random(7))
            warmup = await bench.run(WARMUP_RATE, WARMUP_SECONDS, plan.wait)
            print(f"  warm-up: {warmup['decided']}/{warmup['sent']} decided, p50 {warmup['p50_ms']} ms", flush=True)
            idle = await bench.idle()
            print(f"  idle: {idle['cpu_ms_per_s_total']} ms of CPU per second", flush=True)
            await bench.run(WARMUP_RATE, 2, plan.wait)  # the first tasks after a quiet spell are slower
            rates = list(plan.rates)
            tried: dict[float, list[dict[str, Any]]] = defaultdict(list)
            for round_ in range(1, plan.repeat + 1):  # rounds over the rates, so drift spreads over all
                todo = list(rates)
                while todo:
                    rate = todo.pop(0)
                    result = await bench.run(rate, plan.seconds, plan.wait)
                    tried[rate].append({"round": round_, **result})
                    print(f"  round {round_} " + _row(result), flush=True)
                    if round_ == 1 and not todo and result["kept_up"] and rate * 2 <= plan.max_rate:
                        todo.append(rate * 2)
                        rates.append(rate * 2)
            runs = [median_run(tried[rate]) for rate in rates]
            for sub in subs:
                await sub.unsubscribe()
            await counters.http.aclose()
    finally:
        await pg.close()
    return {
        "sizes": sizes,
        "postgres_settings": srv.settings,
        "duplicate_decisions_seen": ledger.duplicates,
        "warmup": {k: warmup[k] for k in ("offered", "decided", "p50_ms", "p99_ms", "cpu_ms_per_decision")},
        "idle": idle,
        "runs": runs,
    }


def _row(r: dict[str, Any]) -> str:
    by = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_by_process"].items())
    return (
        f"{r['offered']:>5g}/s: decided {r['decided']}/{r['sent']} at {r['decided_per_s']}/s,"
        f" p50 {r['p50_ms']} p99 {r['p99_ms']} ms, CPU {r['cpu_ms_per_decision']} ms/decision ({by});"
        f" machine {r['machine']['busy_percent']}% busy (others {r['machine']['others_cpu_percent']}%)"
    )


def configuration(fsync: str, workdir: Path, plan: Plan) -> dict[str, Any]:
    print(f"fsync {fsync}: starting NATS, Postgres and the five services", flush=True)
    with servers(workdir / fsync, durable=fsync == "on") as srv, stack(srv, workdir / fsync / "logs") as st:
        result = asyncio.run(measure(srv, st, plan))
    return {"nats_sync_interval": "always" if fsync == "on" else "default (2 min)", **result}


def throughput_at_p99(
    runs: list[dict[str, Any]], bounds: tuple[float, ...] = (5, 10, 20, 50)
) -> dict[str, float | None]:
    """The best decided/s of a run that kept up with its p99 within each bound (among the rates tried)."""
    out: dict[str, float | None] = {}
    for bound in bounds:
        fits = [r["decided_per_s"] for r in runs if r["kept_up"] and r["p99_ms"] is not None and r["p99_ms"] <= bound]
        out[f"{bound:g}"] = max(fits) if fits else None
    return out


# --- LiteLLM --------------------------------------------------------------------------------


def litellm(workdir: Path, rate: float, seconds: float, repeat: int) -> dict[str, Any]:
    """LiteLLM's proxy routing over three deployments to the mock provider: its CPU per request
    (the median of ``repeat`` rounds)."""
    try:
        binary = gw.litellm_bin()
    except Exception as exc:  # no registry, no cache
        return {"cpu_ms_per_request": None, "why_none": f"LiteLLM could not be installed: {exc!r}"}
    workdir.mkdir(parents=True, exist_ok=True)
    with gw.mock_provider(workdir) as mock_url:
        config = workdir / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            + "".join(
                f"  - model_name: {LITELLM_MODEL}\n"
                "    litellm_params:\n"
                f"      model: openai/{model}\n"
                f"      api_base: {mock_url}/v1\n"
                "      api_key: mock\n"
                for model in LITELLM_DEPLOYMENTS
            )
            + "router_settings:\n  routing_strategy: simple-shuffle\n"
        )
        port = free_port()
        args = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        env = {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": gw.LITELLM_KEY}
        with gw.process(args, port, workdir / "litellm.log", env=env) as url:
            table = proc_table()
            mine = [p for p in descendants(os.getpid(), table) if str(config) in _cmdline(p)]
            if not mine:
                return {"cpu_ms_per_request": None, "why_none": "the proxy's process was not found in /proc"}
            proxy = Processes({"litellm": min(mine)})
            return asyncio.run(_litellm_load(url, proxy, rate, seconds, repeat))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def _litellm_load(url: str, proxy: Processes, rate: float, seconds: float, repeat: int) -> dict[str, Any]:
    body = {"model": LITELLM_MODEL, "messages": gw.PROMPT, "max_tokens": gw.MAX_TOKENS}
    headers = {"Authorization": f"Bearer {gw.LITELLM_KEY}"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def burst(count: int, at: float) -> list[tuple[float, int] | BaseException]:
            loop = asyncio.get_running_loop()
            start, pending = loop.time(), []
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / at - loop.time()))
                pending.append(asyncio.create_task(gw.one(client, url, body, headers)))
            return await asyncio.gather(*pending, return_exceptions=True)

        await burst(max(20, int(rate * 2)), rate)  # connections open, caches warm
        await asyncio.sleep(1)
        cpu0, t0 = proxy.cpu(), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        cpu1 = proxy.cpu()
        idle_ms_per_s = 1000 * (cpu1["litellm"] - cpu0["litellm"]) / (time.perf_counter() - t0)
        rounds = []
        with MemoryPeaks(proxy) as memory:
            for _ in range(repeat):
                await asyncio.sleep(1)
                cpu0, t0 = proxy.cpu(), time.perf_counter()
                results = await burst(int(rate * seconds), rate)
                await asyncio.sleep(1)  # what the proxy does after answering (callbacks, logging) counts too
                cpu1, window = proxy.cpu(), time.perf_counter() - t0
                ok = [r[0] for r in results if isinstance(r, tuple) and r[1] == 200]
                latency = latency_summary(ok) if ok else {}
                rounds.append(
                    {
                        "requests": len(results),
                        "answered": len(ok),
                        "p50_ms": latency.get("p50_ms"),
                        "p99_ms": latency.get("p99_ms"),
                        "cpu_ms_per_request": per((cpu1["litellm"] - cpu0["litellm"]) * 1000, len(ok)),
                        "window_s": round(window, 2),
                    }
                )
    return {
        "version": gw.LITELLM_VERSION,
        "deployments": [f"openai/{m}" for m in LITELLM_DEPLOYMENTS],
        "routing_strategy": "simple-shuffle",
        "database": None,
        "offered": rate,
        "seconds": seconds,
        "errors": sum(r["requests"] - r["answered"] for r in rounds),
        **{k: _median([r[k] for r in rounds]) for k in ("p50_ms", "p99_ms", "cpu_ms_per_request")},
        "idle_cpu_ms_per_s": round(idle_ms_per_s, 1),
        "rss_mb_peak": memory.peak.get("litellm", (None, None))[0],
        "repeats": rounds,
    }


# --- the run ---------------------------------------------------------------------------------


def wait_for_quiet(limit: float, most: float = 120.0) -> float:
    """Wait (up to ``most`` s) for the 1-minute load average to fall to ``limit``; the load then."""
    deadline = time.monotonic() + most
    while (load := load_average()) > limit and time.monotonic() < deadline:
        print(f"load average {load} > {limit}: waiting for the machine to quieten", flush=True)
        time.sleep(10)
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="25,50,100,200", help="offered tasks/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of sending per rate")
    parser.add_argument("--fsync", default="on,off", help="configurations to run: on, off or both")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the rates; each figure is the median")
    parser.add_argument("--max-rate", type=float, default=1600, help="doubling the last rate stops past this")
    parser.add_argument("--wait", type=float, default=120, help="most seconds to wait for a run's decisions")
    parser.add_argument("--litellm-rate", type=float, default=50, help="requests/s offered to LiteLLM's proxy")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--results", default="fast_path", help="the results file's name (bench/results/NAME.json)")
    parser.add_argument("--catalog", type=int, default=0, help="models in the catalog (registered up to it)")
    parser.add_argument("--budgets", type=int, default=0, help="budgets of other orgs added before the runs")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    fsyncs = [f.strip() for f in args.fsync.split(",") if f.strip()]
    if not rates or not fsyncs or any(f not in ("on", "off") for f in fsyncs) or args.repeat < 1:
        parser.error("--rates needs a rate, --fsync is on, off or on,off, --repeat at least 1")

    started = time.monotonic()
    load_at_start = wait_for_quiet(1.5)
    workdir = Path(tempfile.mkdtemp(prefix="rw-fast-path-"))
    plan = Plan(tuple(rates), args.seconds, args.wait, args.max_rate, args.repeat, args.catalog, args.budgets)
    configs = {f: configuration(f, workdir, plan) for f in fsyncs}
    if args.no_litellm:
        lite: dict[str, Any] = {"cpu_ms_per_request": None, "why_none": "--no-litellm"}
    else:
        print(f"LiteLLM's proxy at {args.litellm_rate:g}/s", flush=True)
        lite = litellm(workdir / "litellm", args.litellm_rate, args.seconds, args.repeat)
        print(f"  {lite}", flush=True)

    main_runs = configs.get("on", configs[fsyncs[0]])["runs"]
    lite_cpu = lite.get("cpu_ms_per_request")
    near = min(main_runs, key=lambda r: abs(r["offered"] - args.litellm_rate))
    ratio = round(near["cpu_ms_per_decision"] / lite_cpu, 2) if lite_cpu and near["cpu_ms_per_decision"] else None
    durability = None
    if "on" in configs and "off" in configs:
        off = {r["offered"]: r for r in configs["off"]["runs"]}
        durability = [
            {
                "offered": r["offered"],
                "p50_ms": {"on": r["p50_ms"], "off": off[r["offered"]]["p50_ms"]},
                "p99_ms": {"on": r["p99_ms"], "off": off[r["offered"]]["p99_ms"]},
                "cpu_ms_per_decision": {
                    "on": r["cpu_ms_per_decision"],
                    "off": off[r["offered"]]["cpu_ms_per_decision"],
                },
            }
            for r in configs["on"]["runs"]
            if r["offered"] in off
        ]
    path = write_results(
        args.results,
        {
            "runs": main_runs,
            "litellm_cpu_ms_per_request": lite_cpu,
            "routewise_over_litellm": {"at_offered": near["offered"], "ratio": ratio},
            "fsync": "on" if "on" in configs else fsyncs[0],
            "throughput_at_p99_ms": throughput_at_p99(main_runs),
            "rss_mb_idle": configs.get("on", configs[fsyncs[0]])["idle"]["rss_mb"],
            "durability_price": durability,
            "fsync_off_runs": configs["off"]["runs"] if "off" in configs and "on" in configs else None,
            "configurations": {f: {k: v for k, v in c.items() if k != "runs"} for f, c in configs.items()},
            "litellm": lite,
            "setup": {
                "services": list(FIVE),
                "one_replica_each": True,
                "nats": "embedded nats-server, locked (bus_users.service_users), streams made by the operator",
                "postgres": "embedded (pgserver)",
                "log_level": os.environ.get("ROUTEWISE_LOG_LEVEL", "INFO"),
                "seconds_per_rate": args.seconds,
                "repeats_per_rate": args.repeat,
                "mix": "bench.selector's: short questions, analysis prompts, code, ~1,500-token reports",
                "load_1m_at_start": load_at_start,
                "wall_seconds": round(time.monotonic() - started),
            },
        },
    )
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
