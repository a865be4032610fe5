"""The metrics report over the bus and the CLI, all five services in the test process, against totals
computed by hand from the events the test saw."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from routewise.client import RoutewiseClient
from routewise.contracts.events import (
    Constraints,
    FeedbackRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.metrics import GetMetricsReport, MetricsReport
from tests.conftest import RunningStack
from tests.helpers import a_call, eventually, record_trusted

PROMPTS = (
    "What is the capital of France?",
    "Compare two approaches to caching in a web service and evaluate the trade-offs.",
    "Summarise the plot of Hamlet in two sentences.",
)


async def test_the_report_equals_totals_computed_by_hand_and_replays_change_nothing(
    running_stack: RunningStack,
) -> None:
    org = f"metrics-{uuid.uuid4().hex[:8]}"
    scope = Scope(org_id=org, team_id="t1")
    async with RoutewiseClient(running_stack.settings) as rw:
        decided = [await rw.submit_task(TaskArrived(scope=scope, prompt=p), wait=20) for p in PROMPTS]
        rejected = await rw.submit_task(
            TaskArrived(scope=scope, prompt=PROMPTS[0], constraints=Constraints(min_quality=0.999)), wait=20
        )
        selected = [d for d in decided if isinstance(d, ModelSelected)]
        assert len(selected) == 3 and isinstance(rejected, TaskRejected)

        # two tasks ran: the first in one call, the second failed once and retried (two calls)
        calls = [
            a_call(selected[0], 1000, 200, "0.0004"),
            a_call(selected[1], 800, 100, "0.0002"),
            a_call(selected[1], 800, 300, "0.0003"),
        ]
        for call in calls:
            await record_trusted(rw, call)
        await rw.record_feedback(
            FeedbackRecorded(task_id=selected[0].task_id, scope=scope, model=selected[0].model, quality=0.9)
        )
        ask = GetMetricsReport(days=1, scope_type="org", scope_id=org, by="model")

        # a late, older rejection of a task that was then selected (approval) does not undo the selection
        stale = TaskRejected(
            task_id=selected[2].task_id,
            scope=scope,
            task_type=selected[2].task_type,
            reason=RejectionReason.approval_required,
            detail="needed an approval",
            occurred_at=selected[2].occurred_at - timedelta(seconds=5),
        )
        await rw.publish(rw.subjects.event(stale), stale)

        async def settled() -> MetricsReport | None:
            r = await rw.request(rw.subjects.metrics_report, ask, MetricsReport)
            done = r.actual_savings.tasks == 2 and r.actual_unpriced_tasks == 0
            return r if done and sum(r.rejections.values()) == 2 else None

        report = await eventually(settled, timeout=20, interval=0.3)

        # estimated savings: baseline estimates minus chosen estimates, over the selected tasks
        assert report.cost_savings.tasks == 3
        assert report.cost_savings.baseline_cost == sum(d.baseline_cost_usd for d in selected)
        assert report.cost_savings.intelligent_cost == sum(d.estimated_cost_usd for d in selected)
        assert (
            report.cost_savings.total_saved == report.cost_savings.baseline_cost - report.cost_savings.intelligent_cost
        )

        # actual savings: the baseline (gpt-4.1) priced at each task's real tokens, minus what was paid
        def baseline_at(input_tokens: int, output_tokens: int) -> Decimal:
            price = calc_price(
                Usage(input_tokens=input_tokens, output_tokens=output_tokens), model_ref="gpt-4.1", provider_id="openai"
            )
            return Decimal(str(price.total_price))

        assert {d.baseline_model for d in selected} == {"gpt-4.1"}
        baseline_actual = baseline_at(1000, 200) + baseline_at(1600, 400)
        assert report.actual_savings.baseline_cost == baseline_actual.quantize(Decimal("1e-12"))
        assert report.actual_savings.intelligent_cost == Decimal("0.0009")
        assert report.actual_savings.total_saved == report.actual_savings.baseline_cost - Decimal("0.0009")

        # the stale rejection does not undo the selection, but the report remembers it
        assert report.rejections == {"no_model_within_constraints": 1, "approval_required": 1}
        assert report.rejected_then_selected == 1
        assert [(s.strategy, s.count) for s in report.by_strategy] == [("complexity", 3)]
        assert sum(m.count for m in report.selection_patterns) == 3
        assert report.fallback_rate == 0.5  # one of the two tasks that ran needed a second call
        # the estimate error is measured on the task that made exactly the call that was estimated
        assert report.estimate_error.tasks == 1
        error = (selected[0].estimated_cost_usd - Decimal("0.0004")) / Decimal("0.0004")
        assert report.estimate_error.bias_pct == pytest.approx(float(error * 100), abs=0.01)
        assert report.estimate_error.mape_pct == pytest.approx(float(abs(error) * 100), abs=0.01)
        # quality: the one rating, on the first task's strategy and model
        assert [(s.rated, s.avg_quality) for s in report.by_strategy] == [(1, 0.9)]
        rated = [(m.model, m.rated, m.avg_quality) for m in report.selection_patterns if m.rated]
        assert rated == [(selected[0].model, 1, 0.9)]
        assert sum(p.cost for p in report.cost_per_day) == Decimal("0.0009")
        assert report.breakdown is not None and sum(b.tasks for b in report.breakdown) == 4
        assert sum(b.actual_saved for b in report.breakdown) == report.actual_savings.total_saved

        # a replay of every cost past JetStream's duplicate window (new Nats-Msg-Ids, same event
        # ids) reaches metrics and changes nothing; a later marker cost shows the replays were consumed
        for event in calls:
            await rw.nc.jetstream().publish(
                rw.subjects.event(event),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"replay-{event.event_id}"},
            )
        marker = a_call(selected[2], 10, 10, "0.00001")
        await record_trusted(rw, marker)

        async def marker_seen() -> MetricsReport | None:
            r = await rw.request(rw.subjects.metrics_report, ask, MetricsReport)
            return r if r.actual_savings.tasks == 3 else None

        again = await eventually(marker_seen, timeout=20, interval=0.3)
        assert again.actual_savings.intelligent_cost == Decimal("0.00091")  # 0.0009 once, plus the marker
        assert again.fallback_rate == pytest.approx(1 / 3, abs=1e-4)  # still one task with two calls, now of three

    # the metrics service's Prometheus meters count each applied event once (replays included)
    assert running_stack.system is not None
    scraped = generate_latest(running_stack.system.runtimes["metrics"][0].registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())

    assert total("routewise_decisions_total", strategy="complexity", policy="normal") == 3
    assert total("routewise_rejections_total", reason="no_model_within_constraints") == 1
    assert total("routewise_rejections_total", reason="approval_required") == 1  # the meter counts every event
    assert total("routewise_actual_cost_usd_total") == pytest.approx(0.00091)
    saved = sum(d.baseline_cost_usd - d.estimated_cost_usd for d in selected)
    assert total("routewise_estimated_savings_usd_total") == pytest.approx(float(saved))
    assert total("routewise_decision_latency_seconds_count") == 3

    shown = running_stack.cli("metrics", "--days", "1", "--scope", f"org:{org}", "--by", "task_type")
    assert shown.returncode == 0, shown.stderr
    assert "Savings over the last 1 days for org:" in shown.stdout and "By task_type" in shown.stdout
    as_json = json.loads(running_stack.cli("metrics", "--scope", f"team:{org}/t1", "--json").stdout)
    assert as_json["cost_savings"]["tasks"] == 3 and as_json["scope"] == f"team:{org}/t1"  # not other orgs' t1
    unqualified = running_stack.cli("metrics", "--scope", "team:t1", "--json")
    assert unqualified.returncode == 1 and "ORG/ID" in json.loads(unqualified.stdout)["error"]["message"]
    bad = running_stack.cli("metrics", "--scope", "galaxy:far", "--json")
    assert bad.returncode == 1 and "TYPE:ID" in json.loads(bad.stdout)["error"]["message"]
