"""``routewise deadletters`` on the running system: what the services dead-letter is listed by
service, subject, reason and time, shown whole, replayed once its cause is fixed (applied once
however often it is replayed) and purged; ``routewise_dead_letters_total`` counts them by reason."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import nats
import pytest

from routewise.cli.deadletters import parse_when
from routewise.client import RoutewiseClient
from routewise.client.deadletters import (
    HEADER_ERROR,
    HEADER_REASON,
    HEADER_REDACTED,
    HEADER_SERVICE,
    HEADER_SUBJECT,
    subject_matches,
)
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import CostRecorded, Scope
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from routewise.contracts.subjects import durable
from tests.conftest import RunningStack, run_cli
from tests.helpers import a_cost, eventually, record_trusted

COST_CONSUMERS = ("budget_enforcer", "cost_predictor", "metrics", "performance_tracker")


def dead_letters(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.cli("deadletters", *args)


def answer(stack: RunningStack, *args: str) -> dict[str, Any]:
    result = dead_letters(stack, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


async def listed(stack: RunningStack, *filters: str, count: int) -> list[dict[str, Any]]:
    """The dead letters these filters list, once there are ``count`` of them."""

    async def enough() -> list[dict[str, Any]] | None:
        letters: list[dict[str, Any]] = answer(stack, "list", *filters)["dead_letters"]
        return letters if len(letters) >= count else None

    letters = await eventually(enough, timeout=15)
    assert len(letters) == count, letters
    return letters


def counted(stack: RunningStack, service: str, reason: str) -> float:
    assert stack.system is not None
    registry = stack.system.runtimes[service][0].registry
    return registry.get_sample_value("routewise_dead_letters_total", {"service": service, "reason": reason}) or 0.0


async def publish(stack: RunningStack, subject: str, data: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(stack.nats_url)
    try:
        await nc.jetstream().publish(subject, data, headers=headers)
    finally:
        await nc.close()


async def applied_everything(stack: RunningStack, *services: str) -> None:
    """Every cost published so far was handled (applied, skipped as a duplicate, or dead-lettered)
    by these services' consumers: none is waiting or unacknowledged."""
    subjects = stack.settings.subjects
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()

        async def drained() -> bool:
            for service in services:
                consumer = durable(service, subjects.of(CostRecorded))
                info = await js.consumer_info(subjects.events_stream.name, consumer)
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        await eventually(drained, timeout=15)
    finally:
        await nc.close()


def test_since_and_until_take_a_duration_or_an_iso_time() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_when("90m", "--since", False, now) == now - timedelta(minutes=90)
    assert parse_when("2d", "--since", False, now) == now - timedelta(days=2)
    assert parse_when("2026-12-01T08:00:00", "--since", False, now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_when("2026-12-01T08:00:00+01:00", "--since", False, now) == datetime(2026, 12, 1, 7, tzinfo=UTC)


def test_a_subject_filter_takes_nats_wildcards() -> None:
    assert subject_matches("rw.costs.recorded", "rw.costs.recorded")
    assert subject_matches("rw.*.recorded", "rw.costs.recorded")
    assert subject_matches("rw.>", "rw.costs.recorded")
    assert not subject_matches("rw.>", "rw")
    assert not subject_matches("rw.tasks.*", "rw.costs.recorded")
    assert not subject_matches("rw.costs", "rw.costs.recorded")


async def test_dead_letters_are_listed_by_service_subject_reason_and_time_shown_whole_and_counted(
    running_stack: RunningStack,
) -> None:
    subjects = running_stack.settings.subjects
    started = datetime.now(UTC).isoformat()
    before = {s: counted(running_stack, s, "invalid_message") for s in (*COST_CONSUMERS, "selector")}
    bad_cost = json.dumps({"task_id": "nope", "cost_usd": "free", "note": uuid.uuid4().hex}).encode()
    cost_msg_id = f"bad-cost-{uuid.uuid4().hex}"
    cost_subject = subjects.for_org("cost_recorded", "acme")
    await publish(running_stack, cost_subject, bad_cost, {"Nats-Msg-Id": cost_msg_id})
    bad_task = {"task_id": str(uuid.uuid4()), "scope": {"org_id": "acme"}, "prompt": "hi", "quality_bias": 7}
    task_subject = subjects.for_org("task_arrived", "acme")
    await publish(running_stack, task_subject, json.dumps(bad_task).encode(), {"Nats-Msg-Id": "bad-task"})

    costs = await listed(running_stack, "--since", started, "--subject", subjects.of(CostRecorded), count=4)
    assert sorted(d["service"] for d in costs) == sorted(COST_CONSUMERS)  # each consumer's own dead letter
    assert {d["reason"] for d in costs} == {"invalid_message"}
    assert all(d["error"].startswith("InvalidMessage: not a valid CostRecorded") for d in costs)
    tasks = await listed(running_stack, "--since", started, "--subject", f"{subjects.namespace}.tasks.>", count=2)
    assert sorted(d["service"] for d in tasks) == ["metrics", "selector"]
    (mine,) = await listed(running_stack, "--since", started, "--service", "budget_enforcer", count=1)
    assert mine["subject"] == cost_subject and mine["deliveries"] == 1
    assert answer(running_stack, "list", "--since", started, "--reason", "max_deliver_exceeded")["dead_letters"] == []
    earlier = {d["seq"] for d in answer(running_stack, "list", "--until", started, "--limit", "10000")["dead_letters"]}
    assert not earlier & {d["seq"] for d in costs + tasks}
    latest = answer(running_stack, "list", "--since", started, "--limit", "2")
    assert (
        latest["matched"] == 6
        and [d["seq"] for d in latest["dead_letters"]] == sorted(d["seq"] for d in costs + tasks)[-2:]
    )
    table = dead_letters(running_stack, "list", "--since", started, "--limit", "2")
    assert table.returncode == 0 and "the latest 2 of 6" in table.stdout
    assert all(f"│ {d['seq']} " in table.stdout for d in latest["dead_letters"])

    shown = answer(running_stack, "show", str(mine["seq"]))
    assert shown["payload"] == json.loads(bad_cost) and not shown["payload_truncated"]
    assert shown["headers"][HEADER_REASON] == "invalid_message" and shown["msg_id"] == cost_msg_id
    assert shown["headers"][HEADER_SUBJECT] == cost_subject and "cost_usd" in shown["error"]
    readable = dead_letters(running_stack, "show", str(mine["seq"]))
    assert readable.returncode == 0 and '"cost_usd": "free"' in readable.stdout and HEADER_ERROR in readable.stdout
    missing = dead_letters(running_stack, "show", "99999999", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "not_found"

    after = {s: counted(running_stack, s, "invalid_message") for s in before}
    assert {s: after[s] - before[s] for s in before} == {
        "budget_enforcer": 1,
        "cost_predictor": 1,
        "metrics": 2,  # the cost and the task
        "performance_tracker": 1,
        "selector": 1,
    }


async def test_a_dead_letter_replayed_once_its_cause_is_fixed_is_applied_once_even_replayed_twice(
    running_stack: RunningStack,
) -> None:
    subjects, settings = running_stack.settings.subjects, running_stack.settings
    started = datetime.now(UTC).isoformat()
    org = f"dl-{uuid.uuid4().hex[:8]}"
    cause = f"fail_{uuid.uuid4().hex[:8]}"  # metrics' ledger refuses this org's rows until the trigger goes
    admin = await asyncpg.connect(running_stack.database.admin_dsn)
    await admin.execute(
        f"""CREATE FUNCTION metrics.{cause}() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'the ledger is down for %', NEW.org_id; END $$;
            CREATE TRIGGER {cause} BEFORE INSERT OR UPDATE ON metrics.task_ledger
            FOR EACH ROW WHEN (NEW.org_id = '{org}') EXECUTE FUNCTION metrics.{cause}();"""
    )
    before = counted(running_stack, "metrics", "max_deliver_exceeded")
    cost = a_cost(Scope(org_id=org), "0.25")
    try:
        async with RoutewiseClient(settings) as rw:
            await record_trusted(rw, cost)
        (letter,) = await listed(running_stack, "--since", started, "--reason", "max_deliver_exceeded", count=1)
        assert letter["service"] == "metrics" and "the ledger is down" in letter["error"]
        assert letter["deliveries"] == 3  # the stack's ROUTEWISE_MAX_DELIVER
        assert counted(running_stack, "metrics", "max_deliver_exceeded") == before + 1

        dry = answer(running_stack, "replay", str(letter["seq"]), "--dry-run")
        assert dry["would_replay"] == 1 and dry["dead_letters"][0]["event_id"] == str(cost.event_id)
        await listed(running_stack, "--since", started, "--service", "metrics", count=1)  # still there
    finally:
        await admin.execute(f"DROP TRIGGER {cause} ON metrics.task_ledger; DROP FUNCTION metrics.{cause}()")
        await admin.close()

    kept = answer(running_stack, "show", str(letter["seq"]))
    replayed = answer(running_stack, "replay", str(letter["seq"]))
    assert replayed["replayed"] == 1 and replayed["skipped"] == 0
    assert answer(running_stack, "list", "--since", started)["dead_letters"] == []  # deleted once replayed

    async def summary() -> MetricsSummary | None:
        async with RoutewiseClient(settings) as rw:
            found = await rw.request(subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
        return found if found.costs_recorded else None

    assert (await eventually(summary)).actual_cost_usd == Decimal("0.25")

    # the same dead letter once more (say, written twice), replayed again: still applied once, everywhere
    copy = kept["headers"] | {"Nats-Msg-Id": f"copy-{uuid.uuid4().hex}"}  # the first one's id is still remembered
    await publish(running_stack, kept["dead_letter_subject"], json.dumps(kept["payload"]).encode(), copy)
    again = answer(running_stack, "replay", "--all", "--service", "metrics", "--since", started)
    assert again["replayed"] == 1
    await applied_everything(running_stack, "metrics", "budget_enforcer")
    async with RoutewiseClient(settings) as rw:
        totals = await rw.request(subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
        status = await rw.request(subjects.budget_status, GetBudgetStatus(scope=Scope(org_id=org)), BudgetStatus)
    assert (totals.costs_recorded, totals.actual_cost_usd) == (1, Decimal("0.25"))
    assert (status.costs_recorded, status.spent_usd) == (1, Decimal("0.25"))
    assert counted(running_stack, "metrics", "max_deliver_exceeded") == before + 1  # nothing dead-lettered again


async def test_what_cannot_be_applied_once_is_not_replayed_and_purge_deletes_only_with_yes(
    running_stack: RunningStack,
) -> None:
    subjects = running_stack.settings.subjects
    reason = f"test_{uuid.uuid4().hex[:8]}"

    def letter(original: str, payload: dict[str, Any], **extra: str) -> tuple[str, bytes, dict[str, str]]:
        headers = extra | {
            HEADER_REASON: reason,
            HEADER_SUBJECT: original,
            HEADER_SERVICE: "budget_enforcer",
            HEADER_ERROR: "RuntimeError: test",
            "Nats-Msg-Id": uuid.uuid4().hex,
        }
        return subjects.dead_letter("budget_enforcer"), json.dumps(payload).encode(), headers

    request = letter(subjects.budget_reserve, {"event_id": str(uuid.uuid4())})  # a request: never a dead letter
    no_id = letter(subjects.for_org("cost_recorded", "acme"), {"task_id": str(uuid.uuid4())})  # no id, no Nats-Msg-Id
    redacted = letter(
        subjects.for_org("task_arrived", "acme"), {"event_id": str(uuid.uuid4())}, **{HEADER_REDACTED: "prompt"}
    )
    for subject, data, headers in (request, no_id, redacted):
        await publish(running_stack, subject, data, headers)
    letters = await listed(running_stack, "--reason", reason, count=3)

    refused = dead_letters(running_stack, "replay", "--all", "--reason", reason, "--json")
    assert refused.returncode == 1
    outcome = json.loads(refused.stdout)
    assert outcome["replayed"] == 0 and outcome["skipped"] == 3
    details = [d["detail"] for d in outcome["dead_letters"]]
    assert "not an event subject" in details[0] and "no event id" in details[1] and "redacted" in details[2]
    assert len(await listed(running_stack, "--reason", reason, count=3)) == 3  # kept

    unasked = dead_letters(running_stack, "purge", "--all", "--reason", reason)
    assert unasked.returncode == 1 and "--yes" in unasked.stderr
    assert dead_letters(running_stack, "purge", str(letters[0]["seq"]), "--all").returncode == 1
    assert dead_letters(running_stack, "replay").returncode == 1  # which ones?
    one = answer(running_stack, "purge", str(letters[0]["seq"]), "--yes")
    assert one == {"purged": 1, "missing": []}
    left = await listed(running_stack, "--reason", reason, count=2)
    assert [d["seq"] for d in left] == [d["seq"] for d in letters[1:]]
    assert answer(running_stack, "purge", "--all", "--reason", reason, "--yes") == {"purged": 2, "missing": []}
    assert answer(running_stack, "list", "--reason", reason)["matched"] == 0
    gone = dead_letters(running_stack, "purge", str(letters[0]["seq"]), "--yes", "--json")
    assert gone.returncode == 1 and json.loads(gone.stdout) == {"purged": 0, "missing": [letters[0]["seq"]]}


async def test_a_letter_from_before_the_org_was_in_the_subject_is_replayed_on_its_orgs(
    running_stack: RunningStack,
) -> None:
    subjects = running_stack.settings.subjects
    reason = f"test_{uuid.uuid4().hex[:8]}"
    headers = {HEADER_REASON: reason, HEADER_SUBJECT: subjects.cost_recorded, HEADER_SERVICE: "metrics"}
    payload = {"event_id": str(uuid.uuid4()), "scope": {"org_id": "a.b"}}
    await publish(running_stack, subjects.dead_letter("metrics"), json.dumps(payload).encode(), headers)
    await listed(running_stack, "--reason", reason, count=1)
    planned = answer(running_stack, "replay", "--all", "--reason", reason, "--dry-run")
    assert [d["subject"] for d in planned["dead_letters"]] == [subjects.for_org("cost_recorded", "a.b")]
    answer(running_stack, "purge", "--all", "--reason", reason, "--yes")


async def test_show_prints_a_large_payload_only_in_part(running_stack: RunningStack) -> None:
    subjects = running_stack.settings.subjects
    reason = f"test_{uuid.uuid4().hex[:8]}"
    headers = {
        HEADER_REASON: reason,
        HEADER_SUBJECT: subjects.for_org("cost_recorded", "acme"),
        HEADER_SERVICE: "metrics",
    }
    await publish(running_stack, subjects.dead_letter("metrics"), b"x" * 100_000, headers)
    (letter,) = await listed(running_stack, "--reason", reason, count=1)
    assert letter["size"] == 100_000
    shown = answer(running_stack, "show", str(letter["seq"]))
    assert shown["payload_truncated"] and shown["payload"] == "x" * 65_536
    readable = dead_letters(running_stack, "show", str(letter["seq"]))
    assert readable.returncode == 0 and "34464 more bytes not shown" in readable.stdout
    assert len(readable.stdout) < 80_000


@pytest.mark.parametrize("command", ["list", "replay --all", "purge --all --yes"])
def test_a_deployment_that_is_not_there_is_a_clear_error(command: str, running_stack: RunningStack) -> None:
    env = running_stack.cli_env() | {"ROUTEWISE_NAMESPACE": "nowhere"}
    result = run_cli(["deadletters", *command.split(), "--json"], env)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "unavailable"
