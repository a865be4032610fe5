"""What only processes show, on one stack of the five services as separate processes.

One trace per task: the CLI's root span, the selector's decision and its requests, and the cost
recorded later with every consumer's processing span, all exported over OTLP/HTTP by the real
processes to a receiver this test runs. Every process serves health, readiness, Prometheus
metrics and its AsyncAPI; a service stopped and started again catches up on what it missed."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from routewise.client import RoutewiseClient
from routewise.contracts.events import BudgetAlert, Constraints, CostRecorded, ModelSelected, Scope, TaskArrived
from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import free_port
from tests.conftest import Database, RunningStack, running
from tests.helpers import a_cost, eventually, spend_once_recorded

pytestmark = pytest.mark.e2e
OTLP_EXPORT_FAST = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def consumes(span: dict[str, Any], event: str) -> bool:
    """A consumer's span of an org's event: ``<ns>.<event>.<org> process`` (``event``: ``costs.recorded``)."""
    return re.search(rf"\.{re.escape(event)}\.[^. ]+ process$", span["name"]) is not None


class Receiver:
    """A minimal OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        service = next(
                            a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
                        )
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append(
                                    {
                                        "service": service,
                                        "name": span.name,
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                                        "attributes": {a.key: a.value for a in span.attributes},
                                    }
                                )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The trace's spans, and those of the batches linked to it (each batch is a trace of its own)."""
        with self.lock:
            linked = {s["trace_id"] for s in self.spans if any(t == trace_id for t, _ in s["links"])}
            return [s for s in self.spans if s["trace_id"] == trace_id or s["trace_id"] in linked]


@pytest.fixture(scope="module")
def traced(
    nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningStack, Receiver]]:
    receiver = Receiver()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **OTLP_EXPORT_FAST}
    with running(
        nats_url, database, tmp_path_factory.mktemp("trace-logs"), dict.fromkeys(SERVICES, 1), extra_env=otel
    ) as stack:
        yield stack, receiver
    receiver.server.shutdown()


def wait_for_spans(
    read: Callable[[], list[dict[str, Any]]], done: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
) -> list[dict[str, Any]]:
    """The spans ``read`` gives once ``done`` holds for them; fails with what was there if never."""
    deadline = time.monotonic() + timeout
    while not done(spans := read()):
        shown = sorted((s.get("service", ""), s["name"]) for s in spans)
        assert time.monotonic() < deadline, f"spans of the trace so far: {shown}"
        time.sleep(0.3)
    return spans


def ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[str]:
    by_id = {s["span_id"]: s for s in spans}
    chain = []
    while span["parent"]:
        span = by_id[span["parent"]]
        chain.append(span["span_id"])
    return chain


def cli(stack: RunningStack, otlp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = stack.cli_env() | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "ROUTEWISE_JAEGER_URL": "http://jaeger.example:16686/",
    }
    return subprocess.run(
        [sys.executable, "-m", "routewise.cli", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_a_task_and_its_cost_are_one_trace_across_every_service(traced: tuple[RunningStack, Receiver]) -> None:
    stack, receiver = traced
    decided = cli(stack, receiver.url, "task", "Compare two caching strategies and evaluate the trade-offs.", "--json")
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    trace_id, task_id = decision["trace_id"], decision["task_id"]
    assert decision["trace_url"] == f"http://jaeger.example:16686/trace/{trace_id}"
    recorded = cli(stack, receiver.url, "record", task_id, "--input-tokens", "300", "--output-tokens", "200", "--json")
    assert recorded.returncode == 0, recorded.stderr

    cost_consumers = {
        "routewise-budget_enforcer",
        "routewise-performance_tracker",
        "routewise-metrics",
        "routewise-cost_predictor",
    }

    def below(spans: list[dict[str, Any]], name: str, event: str) -> set[str]:
        """The services with a span consuming ``event`` below the span named ``name``: in the trace,
        or (a bookkeeping consumer's batch) linked to the span below it that published the event."""
        top = next((s for s in spans if s["name"] == name), None)
        if top is None:
            return set()
        by_id = {s["span_id"]: s for s in spans}
        if any(s["parent"] and s["parent"] not in by_id for s in spans if s["trace_id"] == trace_id):
            return set()  # a parent not exported yet: wait for the rest

        def under_top(span_id: str) -> bool:
            return span_id == top["span_id"] or (
                span_id in by_id and top["span_id"] in ancestors(spans, by_id[span_id])
            )

        links: dict[str, set[str]] = {}  # a batch's trace: the spans it links to
        for s in spans:
            links.setdefault(s["trace_id"], set()).update(i for _, i in s["links"])
        return {
            s["service"]
            for s in spans
            if consumes(s, event)
            and (under_top(s["span_id"]) if s["trace_id"] == trace_id else any(map(under_top, links[s["trace_id"]])))
        }

    def complete(spans: list[dict[str, Any]]) -> bool:
        return cost_consumers <= below(spans, "routewise.cost", "costs.recorded") and {
            "routewise-performance_tracker",
            "routewise-metrics",
        } <= below(spans, "routewise.decide", "models.selected")

    spans = wait_for_spans(lambda: receiver.of_trace(trace_id), complete)
    batches = [s for s in spans if s["trace_id"] != trace_id]
    assert {s["service"] for s in batches} >= {"routewise-metrics", "routewise-performance_tracker"}
    spans = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if not s["parent"]]
    assert [(r["service"], r["name"]) for r in roots] == [("routewise-cli", "routewise task")]
    assert all(s["parent"] in by_id for s in spans if s["parent"]), "every span's parent is in the same trace"

    decide = next(s for s in spans if s["name"] == "routewise.decide")
    assert decide["service"] == "routewise-selector"
    assert decide["attributes"]["routewise.task_id"].string_value == task_id
    assert decide["attributes"]["routewise.model"].string_value == decision["model"]
    assert decide["attributes"]["routewise.strategy"].string_value == "complexity"
    assert decide["attributes"]["routewise.candidate_count"].int_value > 1

    record = next(s for s in spans if s["name"] == "routewise.cost")
    assert record["service"] == "routewise-cli"
    # the cost continues the decision's trace; ModelSelected, published later by the outbox, and
    # every consumer of the cost are below it (complete() waited for exactly that)
    assert decide["span_id"] in ancestors(spans, record)


async def test_an_sdk_cost_joins_its_task_trace_and_so_does_the_budget_alert_it_raises(
    traced: tuple[RunningStack, Receiver],
) -> None:
    """The SDK finds the decision's trace by itself; the alert the cost raises is in that trace."""
    stack, receiver = traced
    org = f"org-{uuid.uuid4().hex[:8]}"
    decided = cli(stack, receiver.url, "task", "Summarise this paragraph in one line.", "--org", org, "--json")
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    trace_id = decision["trace_id"]
    created = stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", "0.01", "--soft", "--json")
    assert created.returncode == 0, created.stdout + created.stderr

    settings = stack.settings
    nc = await nats.connect(settings.nats_url)
    alerts: list[nats.aio.msg.Msg] = []

    async def on_alert(msg: nats.aio.msg.Msg) -> None:
        alerts.append(msg)

    await nc.subscribe(settings.subjects.budget_alert("org", org), cb=on_alert)
    # the application's own spans go where its tracer provider sends them: here, to the receiver too
    app_tracing = TracerProvider(resource=Resource.create({SERVICE_NAME: "the-application"}))
    app_tracing.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    # no trace context given: the SDK asks the selector
    async with RoutewiseClient(settings, tracer_provider=app_tracing) as rw:
        await rw.record_cost(
            a_cost(
                Scope(org_id=org),
                "0.006",
                task_id=uuid.UUID(decision["task_id"]),
                model=decision["model"],
                provider=decision["provider"],
            )
        )
    await eventually(lambda: asyncio.sleep(0, result=len(alerts) == 1), timeout=15)
    await nc.close()

    alert = BudgetAlert.model_validate_json(alerts[0].data)
    assert alert.threshold_percent == 50
    alert_trace = (alerts[0].headers or {})["traceparent"].split("-")[1]
    assert alert_trace == trace_id, "the alert carries the trace of the cost that crossed the threshold"

    def settled(spans: list[dict[str, Any]]) -> bool:
        by_id = {s["span_id"] for s in spans}
        if any(s["parent"] and s["parent"] not in by_id for s in spans):
            return False  # a parent not exported yet (cost-predictor's, which checked the cost): wait for it
        return any(
            s["service"] == "routewise-budget_enforcer" and consumes(s, "costs.recorded") for s in spans
        ) and any(s["name"] == f"{settings.subjects.budget_alert('org', org)} publish" for s in spans)

    spans = await asyncio.to_thread(wait_for_spans, lambda: receiver.of_trace(trace_id), settled)
    decide = next(s for s in spans if s["name"] == "routewise.decide")
    settle = next(s for s in spans if s["service"] == "routewise-budget_enforcer" and consumes(s, "costs.recorded"))
    assert decide["span_id"] in ancestors(spans, settle)  # the cost continues the decision's trace
    published = next(s for s in spans if s["name"] == f"{settings.subjects.budget_alert('org', org)} publish")
    assert published["service"] == "routewise-budget_enforcer"
    assert settle["span_id"] in ancestors(spans, published)  # published by the settlement that crossed 50 %


async def test_services_serve_health_readiness_and_metrics(traced: tuple[RunningStack, Receiver]) -> None:
    process_stack, _ = traced
    async with httpx.AsyncClient() as http:
        for name, sp in process_stack.processes.processes.items():
            base = f"http://127.0.0.1:{sp.port}"
            assert (await http.get(f"{base}/healthz")).json()["service"] == name
            ready = (await http.get(f"{base}/readyz")).json()
            assert ready["ready"] is True and ready["checks"] == {"nats": "ok", "postgres": "ok"}
            metrics = (await http.get(f"{base}/metrics")).text
            assert "faststream_received_messages_total" in metrics
            asyncapi = await http.get(f"{base}/docs/asyncapi")
            assert asyncapi.status_code == 200
            assert process_stack.namespace in asyncapi.text  # documents this service's subjects


# last: it restarts a service of the module's stack
async def test_costs_published_while_a_service_is_down_are_applied_after_restart(
    traced: tuple[RunningStack, Receiver],
) -> None:
    running_stack, _ = traced
    org = f"restart-{uuid.uuid4().hex[:8]}"
    stack = running_stack.processes
    async with RoutewiseClient(running_stack.settings) as rw:
        forced = Constraints(allowed_models=["gpt-4o"])
        tasks = [TaskArrived(scope=Scope(org_id=org), prompt="Say hello.", constraints=forced) for _ in range(4)]
        for task in tasks:  # decided (a cost is counted only for a routed task) while budget-enforcer is up
            assert isinstance(await rw.submit_task(task, wait=30), ModelSelected)
        await asyncio.to_thread(stack.stop_service, "budget_enforcer")
        costs = [
            CostRecorded(
                task_id=task.task_id,
                scope=task.scope,
                model="gpt-4o",
                provider="openai",
                input_tokens=1000,
                output_tokens=1000,
                cost_usd=Decimal("0.0125"),  # what 1000 tokens in and out of gpt-4o cost: cost-predictor accepts it
            )
            for task in tasks
        ]
        for cost in costs:
            await rw.record_cost(cost)
            await rw.record_cost(cost)  # a client retry: same event_id
        await asyncio.to_thread(lambda: (stack.start_service("budget_enforcer"), stack.wait_ready(60)))
        final = await spend_once_recorded(rw, running_stack, org, 4)
    assert final.spent_usd == Decimal("0.05")
    assert final.costs_recorded == 4


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Arize Phoenix (the ``phoenix`` dependency group) on free ports; yields its URL."""
    server = Path(sys.executable).with_name("phoenix")
    if not server.exists():
        pytest.fail("Arize Phoenix is not installed: run `uv sync --group phoenix` (or run `just test-trace-backend`)")
    port = free_port()
    env = os.environ | {
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (tmp_path_factory.getbasetemp() / "phoenix.log").open("w")
    proc = subprocess.Popen([str(server), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"Phoenix exited with code {proc.returncode}; see {log.name}"
            assert time.monotonic() < deadline, f"Phoenix did not answer within 120 s; see {log.name}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.trace_backend
def test_a_task_trace_reaches_arize_phoenix_whole(
    nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory, phoenix: str
) -> None:
    """Opt in (``-m trace_backend``): every process exports to Phoenix's OTLP/HTTP endpoint, and its
    REST API gives the task's trace back with the whole tree."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix, **OTLP_EXPORT_FAST}
    with running(
        nats_url, database, tmp_path_factory.mktemp("phoenix-logs"), dict.fromkeys(SERVICES, 1), extra_env=otel
    ) as stack:
        decided = cli(stack, phoenix, "task", "Explain the trade-offs of write-through caching.", "--json")
        assert decided.returncode == 0, decided.stderr
        decision = json.loads(decided.stdout)
        recorded = cli(stack, phoenix, "record", decision["task_id"], "--input-tokens", "300", "--output-tokens", "90")
        assert recorded.returncode == 0, recorded.stderr

        def read_back() -> list[dict[str, Any]]:
            reply = httpx.get(
                f"{phoenix}/v1/projects/default/spans",
                params={"trace_id": decision["trace_id"], "limit": 1000},
                timeout=10,
            )
            reply.raise_for_status()
            return [
                {
                    "name": s["name"],
                    "span_id": s["context"]["span_id"],
                    "parent": s["parent_id"] or "",
                    "attributes": s["attributes"],
                }
                for s in reply.json()["data"]
            ]

        def cost_consumed(spans: list[dict[str, Any]]) -> bool:
            # budget-enforcer's settlement (the bookkeeping consumers' batches are traces of their
            # own, linked to this one)
            return sum(consumes(s, "costs.recorded") for s in spans) >= 1

        spans = wait_for_spans(read_back, cost_consumed, timeout=30)

    by_id = {s["span_id"]: s for s in spans}
    assert [s["name"] for s in spans if not s["parent"]] == ["routewise task"]
    assert all(s["parent"] in by_id for s in spans if s["parent"]), "every parent is in the trace Phoenix stored"
    decide = next(s for s in spans if s["name"] == "routewise.decide")
    assert decide["attributes"]["routewise.task_id"] == decision["task_id"]
    assert decide["attributes"]["routewise.model"] == decision["model"]
    cost = next(s for s in spans if s["name"] == "routewise.cost")
    assert decide["span_id"] in ancestors(spans, cost)
    consumers = [s for s in spans if consumes(s, "costs.recorded")]
    assert all(cost["span_id"] in ancestors(spans, s) for s in consumers)
    # the decision's budget hold and its ModelSelected are below the decision span (it is
    # estimated in the selector: no request)
    for suffix in ("budget.reserve process", "models.selected.default publish"):
        below = [s for s in spans if s["name"].endswith(suffix)]
        assert below and all(decide["span_id"] in ancestors(spans, s) for s in below), suffix
