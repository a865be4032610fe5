"""One trace per task: the CLI's root span, the selector's decision and its requests, and the
cost recorded later with every consumer's processing span, all exported over OTLP/HTTP by the
real processes to a receiver this test runs."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared.subjects import SERVICES
from tests.conftest import Database, RunningStack, running

pytestmark = pytest.mark.e2e


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
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def traced(
    nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningStack, Receiver]]:
    receiver = Receiver()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running(
        nats_url, database, tmp_path_factory.mktemp("trace-logs"), dict.fromkeys(SERVICES, 1), extra_env=otel
    ) as stack:
        yield stack, receiver
    receiver.server.shutdown()


def cli(stack: RunningStack, receiver: Receiver, *args: str) -> subprocess.CompletedProcess[str]:
    env = stack.cli_env() | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "ROUTEWISE_JAEGER_URL": "http://jaeger.example:16686/",
    }
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_a_task_and_its_cost_are_one_trace_across_every_service(traced: tuple[RunningStack, Receiver]) -> None:
    stack, receiver = traced
    decided = cli(stack, receiver, "task", "Compare two caching strategies and evaluate the trade-offs.", "--json")
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    trace_id, task_id = decision["trace_id"], decision["task_id"]
    assert decision["trace_url"] == f"http://jaeger.example:16686/trace/{trace_id}"
    recorded = cli(stack, receiver, "record", task_id, "--input-tokens", "300", "--output-tokens", "200", "--json")
    assert recorded.returncode == 0, recorded.stderr

    wanted = {"routewise-cli", *(f"routewise-{s}" for s in SERVICES)}
    deadline = time.monotonic() + 20
    spans = receiver.of_trace(trace_id)
    while {s["service"] for s in spans} != wanted or not any(s["name"] == "routewise record" for s in spans):
        assert time.monotonic() < deadline, f"spans of the trace so far: {[(s['service'], s['name']) for s in spans]}"
        time.sleep(0.3)
        spans = receiver.of_trace(trace_id)
        # the consumers of the cost export a moment after the CLI exits
        if {s["service"] for s in spans} == wanted:
            time.sleep(1.0)
            spans = receiver.of_trace(trace_id)

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

    def ancestors(span: dict[str, Any]) -> list[str]:
        chain = []
        while span["parent"]:
            span = by_id[span["parent"]]
            chain.append(span["span_id"])
        return chain

    # ModelSelected, published later by the outbox, is consumed under the decision span
    selected_consumers = {
        s["service"]
        for s in spans
        if s["name"].endswith("models.selected process") and decide["span_id"] in ancestors(s)
    }
    assert {"routewise-performance_tracker", "routewise-metrics"} <= selected_consumers

    record = next(s for s in spans if s["name"] == "routewise record")
    assert decide["span_id"] in ancestors(record)  # the cost continues the decision's trace
    # every service that consumed the cost did so inside that trace, below the record span
    cost_consumers = {s["service"] for s in spans if record["span_id"] in ancestors(s)}
    assert {
        "routewise-budget_enforcer",
        "routewise-performance_tracker",
        "routewise-metrics",
        "routewise-cost_predictor",
    } <= cost_consumers
