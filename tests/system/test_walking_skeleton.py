"""The five services carry a real task end to end: in the test process for the flows, as separate
processes for what only processes show (a restart, the HTTP endpoints)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import asyncpg
import nats
from genai_prices import Usage, calc_price

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import (
    CostRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
    Tier,
)
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from tests.conftest import RunningStack
from tests.helpers import a_call, a_cost, eventually, record_trusted, spend_once_recorded


async def fetch_row(dsn: str, sql: str, *args: object) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def test_a_task_is_decided_recorded_and_seen_by_every_service(running_stack: RunningStack) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    decided = running_stack.cli("task", "What is the capital of France?", "--org", org, "--team", "t1", "--json")
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    assert decision["status"] == "selected"
    assert decision["tier"] == "micro"  # a one-line factual question
    assert Decimal(decision["estimated_cost_usd"]) < Decimal(decision["baseline_cost_usd"])
    assert len(decision["trace_id"]) == 32
    task_id = decision["task_id"]

    recorded = running_stack.cli(
        "record",
        task_id,
        "--input-tokens",
        "1200",
        "--output-tokens",
        "300",
        "--latency-ms",
        "640",
        "--json",
    )
    assert recorded.returncode == 0, recorded.stderr
    cost = json.loads(recorded.stdout)
    assert cost["status"] == "recorded"  # cost-predictor checked it and recorded it
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=300), model_ref=decision["model"], provider_id=decision["provider"]
    ).total_price
    assert Decimal(cost["cost_usd"]) == expected  # priced by cost-predictor from genai-prices
    assert cost["model"] == decision["model"]

    admin = running_stack.database.admin_dsn
    tid = uuid.UUID(task_id)
    selector_row = await fetch_row(admin, "SELECT * FROM selector.decisions WHERE task_id = $1", tid)
    assert selector_row is not None and selector_row["model"] == decision["model"]

    async def spend_row() -> asyncpg.Record | None:
        return await fetch_row(
            admin, "SELECT * FROM budget_enforcer.scope_spend WHERE scope_type = 'org' AND scope_id = $1", org
        )

    spend = await eventually(spend_row)
    assert spend["spent_usd"] == expected and spend["costs_recorded"] == 1

    async def error_row() -> asyncpg.Record | None:
        return await fetch_row(admin, "SELECT * FROM cost_predictor.estimate_errors WHERE task_id = $1", tid)

    error = await eventually(error_row)  # the selector's estimate, compared with what the call cost
    assert (error["model"], error["actual_output"], error["actual_cost_usd"]) == (decision["model"], 300, expected)
    assert error["predicted_cost_usd"] == Decimal(decision["estimated_cost_usd"])

    async def ledger_row() -> asyncpg.Record | None:
        row = await fetch_row(admin, "SELECT * FROM metrics.task_ledger WHERE task_id = $1", tid)
        return row if row and row["actual_cost_usd"] is not None and row["status"] else None

    ledger = await eventually(ledger_row)
    assert ledger["status"] == "selected"
    assert ledger["actual_cost_usd"] == expected
    assert str(ledger["estimated_cost_usd"].normalize()) == str(Decimal(decision["estimated_cost_usd"]).normalize())

    async def outcome_row() -> asyncpg.Record | None:
        return await fetch_row(admin, "SELECT * FROM performance_tracker.outcomes WHERE task_id = $1", tid)

    outcome = await eventually(outcome_row)  # counted under the pattern the selector saw
    assert (outcome["model"], outcome["pattern"]) == (decision["model"], "factual")


HARD_PROMPT = (
    "Design a distributed, concurrent rate limiter. Analyze the trade-offs of token bucket versus sliding window, "
    "prove correctness step by step, then write and optimize the Python code:\n"
    "```python\nclass Limiter:\n    ...\n```\n" + "Consider failure modes of each node. " * 40
)


async def test_prompt_complexity_moves_the_tier_up(running_stack: RunningStack) -> None:
    hard = HARD_PROMPT
    async with RoutewiseClient(running_stack.settings) as rw:
        easy = await rw.submit_task(TaskArrived(scope=Scope(org_id="tiers"), prompt="Say hi"), wait=20)
        heavy = await rw.submit_task(TaskArrived(scope=Scope(org_id="tiers"), prompt=hard, task_type="code"), wait=20)
    assert isinstance(easy, ModelSelected) and isinstance(heavy, ModelSelected)
    assert easy.tier.rank < heavy.tier.rank
    assert heavy.pattern == "code"
    assert heavy.estimated_cost_usd > easy.estimated_cost_usd


async def test_a_long_prompt_only_goes_to_a_model_whose_context_window_holds_it(running_stack: RunningStack) -> None:
    long_prompt = "lorem ipsum dolor " * 45_000  # 135k tokens: more than gpt-4o or deepseek-chat hold
    async with RoutewiseClient(running_stack.settings) as rw:
        outcome = await rw.submit_task(TaskArrived(scope=Scope(org_id="big"), prompt=long_prompt), wait=60)
    assert isinstance(outcome, ModelSelected), outcome
    assert outcome.estimated_input_tokens > 128_000
    assert outcome.model not in {"gpt-4o", "gpt-4o-mini", "deepseek-chat"}
    assert not {"gpt-4o", "gpt-4o-mini", "deepseek-chat"} & set(outcome.fallback_chain)


async def test_cli_errors_are_clear(running_stack: RunningStack) -> None:
    unknown = running_stack.cli("record", str(uuid.uuid4()), "--input-tokens", "1", "--output-tokens", "1", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["error"]["code"] == "not_found"
    empty = running_stack.cli("task", "   ", "--json")
    assert empty.returncode == 1
    assert "prompt is empty" in json.loads(empty.stdout)["error"]["message"]
    bad_cost = running_stack.cli(
        "record", str(uuid.uuid4()), "--input-tokens", "1", "--output-tokens", "1", "--cost", "-1"
    )
    assert bad_cost.returncode == 1 and "--cost" in bad_cost.stderr


async def test_values_the_contract_refuses_are_clear_cli_errors(running_stack: RunningStack) -> None:
    decided = json.loads(running_stack.cli("task", "Name three primes", "--json").stdout)
    task_id = decided["task_id"]
    for args, needle in [
        (["--cost", "0.0000000000001"], "decimal places"),  # beyond the 12 places money is kept to
        (["--failed", ""], "a failed call needs an error_type"),
        (["--input-tokens", "200000000"], "less than or equal to"),
    ]:
        base = ["record", task_id, "--input-tokens", "1", "--output-tokens", "1"]
        if args[0] == "--input-tokens":
            base = ["record", task_id, "--output-tokens", "1"]
        result = running_stack.cli(*base, *args, "--json")
        assert result.returncode == 1, result.stdout
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "invalid_request"
        assert needle in error["message"]
        assert "Traceback" not in result.stderr


async def test_every_call_of_a_task_counts_in_budget_and_metrics_alike(running_stack: RunningStack) -> None:
    org = f"calls-{uuid.uuid4().hex[:8]}"
    decided = json.loads(running_stack.cli("task", "Translate hello to French", "--org", org, "--json").stdout)
    task_id = decided["task_id"]
    first = running_stack.cli(
        "record",
        task_id,
        "--input-tokens",
        "10",
        "--output-tokens",
        "0",
        "--cost",
        "0.005",
        "--failed",
        "rate_limited",
        "--json",
    )
    retry = running_stack.cli(
        "record", task_id, "--input-tokens", "10", "--output-tokens", "20", "--cost", "0.0025", "--json"
    )
    assert first.returncode == 0, first.stderr
    assert retry.returncode == 0, retry.stderr
    async with RoutewiseClient(running_stack.settings) as rw:
        budget = await spend_once_recorded(rw, running_stack, org, 2)

        async def metrics() -> MetricsSummary | None:
            m = await rw.request(
                running_stack.settings.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary
            )
            return m if m.costs_recorded >= 2 else None

        summary = await eventually(metrics)
    assert budget.spent_usd == summary.actual_cost_usd == Decimal("0.0075")
    assert budget.costs_recorded == summary.costs_recorded == 2
    assert summary.tasks == 1


async def test_a_malformed_cost_is_dead_lettered_and_the_service_keeps_working(running_stack: RunningStack) -> None:
    settings = running_stack.settings
    org = f"dlq-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        bad = b'{"task_id": "nope", "cost_usd": "free"}'
        subject = settings.subjects.for_org("cost_recorded", org)
        await js.publish(subject, bad, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        dlq = await js.subscribe(settings.subjects.dead_letter("budget_enforcer"), ordered_consumer=True)
        letter = await dlq.next_msg(timeout=15)
        assert letter.data == bad
        assert letter.headers and letter.headers["Routewise-DeadLetter-Reason"] == "invalid_message"
    finally:
        await nc.close()
    async with RoutewiseClient(settings) as rw:
        await record_trusted(rw, a_cost(Scope(org_id=org), "0.5"))
        assert (await spend_once_recorded(rw, running_stack, org, 1)).spent_usd == Decimal("0.5")


async def test_a_replayed_cost_is_applied_once_by_every_consumer(running_stack: RunningStack) -> None:
    """A replay after the stream's duplicate window (a new Nats-Msg-Id) reaches the consumers;
    their inboxes still apply it once."""
    settings = running_stack.settings
    org = f"replay-{uuid.uuid4().hex[:8]}"
    task_type = f"replay_{uuid.uuid4().hex[:8]}"  # a profile no other test touches

    def a_cost(amount: str) -> CostRecorded:
        return CostRecorded(
            task_id=uuid.uuid4(),
            scope=Scope(org_id=org),
            task_type=task_type,
            model="gpt-4.1",
            provider="openai",
            input_tokens=100,
            output_tokens=100,
            cost_usd=Decimal(amount),
        )

    cost = a_cost("0.125")
    nc = await nats.connect(settings.nats_url)
    try:
        for attempt in range(3):
            await nc.jetstream().publish(
                settings.subjects.event(cost),
                cost.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"replay-{attempt}-{cost.event_id}"},
            )
    finally:
        await nc.close()
    async with RoutewiseClient(settings) as rw:
        marker = a_cost("0.001")
        await record_trusted(rw, marker)  # once this is applied, the replays before it were too
        status = await spend_once_recorded(rw, running_stack, org, 2)
    assert status.spent_usd == Decimal("0.126")
    assert status.costs_recorded == 2
    admin = running_stack.database.admin_dsn

    async def applied() -> tuple[int, int] | None:
        conn = await asyncpg.connect(admin)
        try:
            ledger = await conn.fetchval(
                "SELECT count(*) FROM metrics.task_ledger"
                " WHERE task_id = ANY($1::uuid[]) AND actual_cost_usd IS NOT NULL",
                [cost.task_id, marker.task_id],
            )
            learned = await conn.fetchval(
                "SELECT observations FROM cost_predictor.output_profiles WHERE task_type = $1 AND model = 'gpt-4.1'",
                task_type,
            )
        finally:
            await conn.close()
        # the consumer applies in stream order: once the marker counts, the replays before it did too
        return (ledger, learned) if ledger == 2 and (learned or 0) >= 2 else None

    assert await eventually(applied) == (2, 2)


async def test_estimates_show_the_budget_impact_of_a_real_budget(running_stack: RunningStack) -> None:
    org = f"impact-{uuid.uuid4().hex[:8]}"
    created = running_stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", "0.05", "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    shown = running_stack.cli(
        "estimate",
        "Write a limerick",
        "-m",
        "gpt-5-nano",
        "-m",
        "claude-opus-4-1",
        "--output-tokens",
        "800",
        "--org",
        org,
        "--json",
    )
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["budget_status"]["remaining_usd"] == "0.05"
    impact = {e["model"]: e["budget_impact"] for e in result["estimates"]}
    assert impact == {"gpt-5-nano": "low", "claude-opus-4-1": "high"}  # $0.0003 vs $0.06 of $0.05 left


async def org_budget(stack: RunningStack, org: str, limit: str, *thresholds: str) -> None:
    args = [a for t in thresholds for a in ("--threshold", t)] or ["--threshold", "100:notify"]
    created = stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", limit, *args, "--json")
    assert created.returncode == 0, created.stdout + created.stderr


async def test_a_decision_holds_its_budget_and_the_cost_settles_it(running_stack: RunningStack) -> None:
    org = f"hold-{uuid.uuid4().hex[:8]}"
    await org_budget(running_stack, org, "1")
    async with RoutewiseClient(running_stack.settings) as rw:
        decision = await rw.submit_task(TaskArrived(scope=Scope(org_id=org), prompt="What is DNS?"), wait=20)
        assert isinstance(decision, ModelSelected)
        assert decision.reservation_id is not None
        held = await rw.request(
            rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
        )
        assert held.budgets[0].reserved_usd > decision.estimated_cost_usd  # the p90 is held
        await rw.record_cost(a_call(decision, 10, 10, "0.0001"))
        settled = await spend_once_recorded(rw, running_stack, org, 1)
    assert settled.budgets[0].reserved_usd == 0
    assert settled.budgets[0].current_spend_usd == Decimal("0.0001")


async def test_a_hard_budget_forces_a_downgrade_then_a_rejection(running_stack: RunningStack) -> None:
    from routewise.contracts.catalog import default_catalog
    from routewise.contracts.cost import CostEstimate, EstimateCost
    from routewise.contracts.routing import ListPolicies, PolicyList

    catalog = default_catalog()
    async with RoutewiseClient(running_stack.settings) as rw:
        policies = await rw.request(rw.subjects.routing_policies_list, ListPolicies(), PolicyList)
        code = next(p for p in policies.policies if p.name == "code")  # what the selector estimates for "code"
        quote = await rw.request(
            rw.subjects.cost_estimate,
            EstimateCost(prompt=HARD_PROMPT, models=code.models, task_type="code", max_output_tokens=code.max_tokens),
            CostEstimate,
        )
        p90 = {e.model: e.cost_usd_p90 for e in quote.estimates}
        micro = max(p90[m] for m in code.models if catalog.require(m).tier is Tier.micro)
        org = f"tight-{uuid.uuid4().hex[:8]}"
        await org_budget(running_stack, org, str(micro * Decimal("1.01")))  # only micro models fit
        decided = await rw.submit_task(
            TaskArrived(scope=Scope(org_id=org), prompt=HARD_PROMPT, task_type="code"), wait=30
        )
        assert isinstance(decided, ModelSelected), decided
        assert decided.tier is Tier.micro
        assert "downgraded to" in decided.reasoning and "refused" in decided.reasoning
        await record_trusted(rw, a_call(decided, 1, 1, micro))  # the budget is now all but spent
        await spend_once_recorded(rw, running_stack, org, 1)
        rejected = await rw.submit_task(
            TaskArrived(scope=Scope(org_id=org), prompt=HARD_PROMPT, task_type="code"), wait=30
        )
    assert isinstance(rejected, TaskRejected), rejected
    assert rejected.reason is RejectionReason.budget_exhausted
    assert "tried" in rejected.detail and rejected.budget_id is not None


async def test_a_task_needing_approval_is_rejected_then_approved_and_decided(running_stack: RunningStack) -> None:
    org = f"approve-{uuid.uuid4().hex[:8]}"
    await org_budget(running_stack, org, "1", "1:require-approval")
    async with RoutewiseClient(running_stack.settings) as rw:
        await record_trusted(rw, a_cost(Scope(org_id=org), "0.02"))  # 2 %: approval in force
        await spend_once_recorded(rw, running_stack, org, 1)
        task = TaskArrived(scope=Scope(org_id=org), prompt="Summarise the release notes")
        first = await rw.submit_task(task, wait=20)
        assert isinstance(first, TaskRejected)
        assert first.reason is RejectionReason.approval_required
        approved = running_stack.cli("budgets", "approve", str(task.task_id), "--reason", "release day")
        assert approved.returncode == 0, approved.stderr
        again = await rw.submit_task(task.model_copy(update={"event_id": uuid.uuid4()}), wait=20)
    assert isinstance(again, ModelSelected), again
    assert again.reservation_id is not None
