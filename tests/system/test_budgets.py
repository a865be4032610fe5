"""budget-enforcer over the bus: two replicas (in the test process), real NATS and Postgres."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import nats
import pytest

from routewise.client import RemoteError, RoutewiseClient
from routewise.contracts.budget import (
    BudgetStatus,
    GetBudgetStatus,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
)
from routewise.contracts.events import BudgetAlert, RejectionReason, Scope, TaskRejected, Tier
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import a_cost, eventually, record_trusted

TTL_S = 3


@pytest.fixture(scope="module")
def budget_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    with in_process_stack(
        nats_url,
        database,
        {"budget_enforcer": 2},
        extra_env={"ROUTEWISE_RESERVATION_TTL": str(TTL_S)},
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def lasting_holds_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    """Two replicas whose holds last the default 15 minutes: no hold expires while a test runs,
    however slow the machine, so what is admitted is what is held."""
    with in_process_stack(nats_url, database, {"budget_enforcer": 2}) as stack:
        yield stack


def new_org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def create(stack: RunningStack, scope: str, limit: str, *args: str) -> dict:  # type: ignore[type-arg]
    result = stack.cli("budgets", "create", "--scope", scope, "--limit", limit, "--by", "ops@acme", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def reserve(
    rw: RoutewiseClient,
    scope: Scope,
    amount: str,
    model: str = "gpt-4o",
    tier: Tier | None = None,
    task_id: uuid.UUID | None = None,
) -> Reservation:
    return await rw.request(
        rw.subjects.budget_reserve,
        ReserveBudget(task_id=task_id or uuid.uuid4(), scope=scope, amount_usd=Decimal(amount), model=model, tier=tier),
        Reservation,
    )


async def status(rw: RoutewiseClient, scope_type: str, scope_id: str) -> BudgetStatus:
    return await rw.request(
        rw.subjects.budget_status, GetBudgetStatus(scope_type=scope_type, scope_id=scope_id), BudgetStatus
    )


async def spent_when(rw: RoutewiseClient, scope_type: str, scope_id: str, costs: int) -> BudgetStatus:
    async def check() -> BudgetStatus | None:
        s = await status(rw, scope_type, scope_id)
        return s if s.costs_recorded >= costs else None

    return await eventually(check, timeout=20)


def test_budget_admin_is_validated_and_audited(budget_stack: RunningStack, database: Database) -> None:
    org = new_org()
    for args, needle in [
        (["--limit", "0"], "greater than 0"),
        (["--limit", "10", "--threshold", "80:notify", "--threshold", "50:notify"], "strictly increasing"),
        (["--limit", "10", "--threshold", "70:email"], "Input should be 'notify'"),
        (["--limit", "10", "--threshold", "150:notify"], "less than or equal to 100"),
        (["--limit", "10", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["--limit", "10", "--period", "fortnightly"], "Input should be 'daily'"),
    ]:
        bad = budget_stack.cli("budgets", "create", "--scope", f"org:{org}", *args, "--json")
        assert bad.returncode == 1, bad.stdout
        error = json.loads(bad.stdout)["error"]
        assert error["code"] == "invalid_request"
        assert needle in error["message"], error
    scope_error = budget_stack.cli("budgets", "create", "--scope", "galaxy:far", "--limit", "1", "--json")
    assert "a scope is TYPE:ID" in json.loads(scope_error.stdout)["error"]["message"]

    created = create(
        budget_stack,
        f"org:{org}",
        "100",
        "--period",
        "monthly",
        "--tz",
        "Europe/Paris",
        "--max-per-request",
        "2.50",
        "--soft",
    )
    assert [t["percent"] for t in created["thresholds"]] == [50, 80, 95, 100]  # the defaults
    assert created["thresholds"][1]["max_tier"] == "versatile"
    assert (created["mode"], created["timezone"], created["max_cost_per_request"]) == ("soft", "Europe/Paris", "2.5")
    budget_id = created["id"]
    listed = json.loads(budget_stack.cli("budgets", "list", f"org:{org}", "--json").stdout)["budgets"]
    assert [b["id"] for b in listed] == [budget_id]
    updated = budget_stack.cli("budgets", "update", budget_id, "--limit", "150", "--hard", "--by", "cfo@acme", "--json")
    assert json.loads(updated.stdout)["limit_usd"] == "150"
    shown = json.loads(budget_stack.cli("budgets", "show", budget_id, "--json").stdout)
    assert (shown["limit_usd"], shown["mode"]) == ("150", "hard")
    deleted = budget_stack.cli("budgets", "delete", budget_id, "--by", "cfo@acme", "--json")
    assert deleted.returncode == 0
    gone = budget_stack.cli("budgets", "show", budget_id, "--json")
    assert json.loads(gone.stdout)["error"]["code"] == "not_found"

    async def audit() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database.admin_dsn)
        try:
            return list(
                await conn.fetch(
                    "SELECT actor, action, before, after FROM budget_enforcer.budget_audit"
                    " WHERE budget_id = $1 ORDER BY id",
                    uuid.UUID(budget_id),
                )
            )
        finally:
            await conn.close()

    rows = asyncio.run(audit())
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("ops@acme", "create"),
        ("cfo@acme", "update"),
        ("cfo@acme", "delete"),
    ]
    assert json.loads(rows[1]["before"])["limit_usd"] == "100"
    assert json.loads(rows[1]["after"])["limit_usd"] == "150"


async def test_200_concurrent_reservations_never_exceed_a_hard_limit(lasting_holds_stack: RunningStack) -> None:
    budget_stack = lasting_holds_stack
    org = new_org()
    create(budget_stack, f"org:{org}", "10", "--threshold", "100:notify")
    rng = random.Random(11)
    amounts = [f"{rng.uniform(0.05, 0.5):.4f}" for _ in range(200)]
    async with RoutewiseClient(budget_stack.settings) as rw:
        results = await asyncio.gather(*(reserve(rw, Scope(org_id=org), a) for a in amounts))
        final = await status(rw, "org", org)
    admitted = [Decimal(a) for a, r in zip(amounts, results, strict=True) if r.admitted]
    refused = [r for r in results if not r.admitted]
    assert sum(admitted) <= Decimal(10)
    assert sum(admitted) > Decimal("9.5")  # refusals only when the next amount did not fit
    assert {r.reason for r in refused} == {"budget_exhausted"}
    (view,) = final.budgets
    assert view.reserved_usd == sum(admitted)
    assert view.status == "exceeded" or view.percent_used >= Decimal(95)


async def test_a_user_cost_counts_on_team_and_org_and_replays_change_nothing(budget_stack: RunningStack) -> None:
    org, team_id, user_id = new_org(), f"team-{uuid.uuid4().hex[:6]}", f"user-{uuid.uuid4().hex[:6]}"
    team, user = f"{org}/{team_id}", f"{org}/{user_id}"
    for scope in (f"org:{org}", f"team:{team}", f"user:{user}"):
        create(budget_stack, scope, "100", "--threshold", "100:notify")
    scope = Scope(org_id=org, team_id=team_id, user_id=user_id)
    costs = [a_cost(scope, amount) for amount in ("1.25", "2.5", "0.125")]
    async with RoutewiseClient(budget_stack.settings) as rw:
        for cost in costs:
            await record_trusted(rw, cost)
        before = {
            kind: await spent_when(rw, kind, ident, 3) for kind, ident in (("org", org), ("team", team), ("user", user))
        }
        nc = rw.nc
        for i, cost in enumerate(costs):  # replay every cost, past the stream's duplicate detection
            await nc.jetstream().publish(
                budget_stack.settings.subjects.event(cost),
                cost.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"replay-{i}-{cost.event_id}"},
            )
        marker_scope = Scope(org_id=org)
        await record_trusted(rw, a_cost(marker_scope, "0"))  # after the replays in the stream
        await spent_when(rw, "org", org, 4)
        after = {kind: await status(rw, kind, ident) for kind, ident in (("org", org), ("team", team), ("user", user))}
    for kind in ("org", "team", "user"):
        assert before[kind].budgets[0].current_spend_usd == Decimal("3.875")
        assert after[kind].budgets[0].current_spend_usd == Decimal("3.875")
    assert (before["user"].spent_usd, before["team"].costs_recorded) == (Decimal("3.875"), 3)


async def test_a_team_budget_of_one_org_leaves_another_orgs_team_of_that_name_alone(budget_stack: RunningStack) -> None:
    acme, globex = new_org(), new_org()
    create(budget_stack, f"team:{acme}/platform", "0.01")  # hard
    async with RoutewiseClient(budget_stack.settings) as rw:
        refused = await reserve(rw, Scope(org_id=acme, team_id="platform"), "1")
        admitted = await reserve(rw, Scope(org_id=globex, team_id="platform"), "1")
        await record_trusted(rw, a_cost(Scope(org_id=globex, team_id="platform"), "2"))
        await spent_when(rw, "org", globex, 1)
        acme_team = await status(rw, "team", f"{acme}/platform")
        globex_team = await status(rw, "team", f"{globex}/platform")
    assert (refused.admitted, refused.reason) == (False, "budget_exhausted") and admitted.admitted
    assert (acme_team.spent_usd, acme_team.budgets[0].current_spend_usd) == (0, 0)
    assert (globex_team.spent_usd, globex_team.budgets) == (Decimal(2), [])


async def test_an_org_whose_id_has_a_dot_gets_its_alerts_and_no_other_org_sees_them(budget_stack: RunningStack) -> None:
    parent = new_org()
    dotted = f"{parent}.b"  # a valid id; as a raw subject token it would read as org `parent`, then `b`
    for org in (parent, dotted):
        create(budget_stack, f"org:{org}", "1", "--soft", "--threshold", "50:notify")
    received: dict[str, list[BudgetAlert]] = {parent: [], dotted: []}
    async with RoutewiseClient(budget_stack.settings) as rw:
        for org, alerts in received.items():

            async def on_alert(msg: nats.aio.msg.Msg, alerts: list[BudgetAlert] = alerts) -> None:
                alerts.append(BudgetAlert.model_validate_json(msg.data))

            await rw.nc.subscribe(rw.subjects.org_alerts(org), cb=on_alert)
        await record_trusted(rw, a_cost(Scope(org_id=dotted), "0.6"))
        await spent_when(rw, "org", dotted, 1)

        async def alerted() -> list[BudgetAlert]:
            return received[dotted]

        await eventually(alerted)
        await rw.nc.flush()
    assert [(a.scope_id, a.threshold_percent) for a in received[dotted]] == [(dotted, 50)]
    assert received[parent] == []  # `parent`'s wildcard does not reach into `parent.b`


async def test_thresholds_alert_once_per_period_and_late_subscribers_replay(budget_stack: RunningStack) -> None:
    org = new_org()
    create(budget_stack, f"org:{org}", "1", "--soft")  # default thresholds; soft: spend may pass the limit
    settings = budget_stack.settings
    received: list[BudgetAlert] = []
    nc = await nats.connect(settings.nats_url)

    async def on_alert(msg: nats.aio.msg.Msg) -> None:
        received.append(BudgetAlert.model_validate_json(msg.data))

    await nc.subscribe(settings.subjects.budget_alert("org", org), cb=on_alert)
    async with RoutewiseClient(settings) as rw:
        for amount in ("0.3", "0.3", "0.25", "0.2", "0.1", "0.5"):  # 30, 60, 85, 105, 115, 165 %
            await record_trusted(rw, a_cost(Scope(org_id=org), amount))
        await spent_when(rw, "org", org, 6)
    await eventually(lambda: asyncio.sleep(0, result=len(received) >= 4), timeout=10)
    await asyncio.sleep(0.5)  # nothing more may arrive
    await nc.close()
    # two replicas apply costs (and publish alerts) concurrently: the set is exact, the order is not
    by_threshold = {a.threshold_percent: a for a in received}
    assert sorted(a.threshold_percent for a in received) == [50, 80, 95, 100]  # each exactly once
    for threshold, alert in by_threshold.items():
        assert alert.percent >= threshold
        assert alert.percent == (alert.spent_usd / alert.limit_usd * 100).quantize(Decimal("0.01"))
        assert alert.cause_event_id is not None
        assert alert.org_id == org
    assert by_threshold[100].actions_in_force == ["block", "notify", "require-approval", "restrict-models"]
    late = budget_stack.cli("alerts", "--org", org, "--json")  # connects after the fact
    lines = [BudgetAlert.model_validate_json(line) for line in late.stdout.splitlines()]
    assert sorted(a.event_id for a in lines) == sorted(a.event_id for a in received)


async def test_costs_land_in_the_period_of_their_own_timestamp(budget_stack: RunningStack) -> None:
    org = new_org()
    paris = ZoneInfo("Europe/Paris")
    start = (datetime.now(paris) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    create(
        budget_stack,
        f"org:{org}",
        "5",
        "--period",
        "daily",
        "--tz",
        "Europe/Paris",
        "--start",
        start.isoformat(),
        "--threshold",
        "100:notify",
    )
    yesterday = datetime.now(paris) - timedelta(days=1)
    async with RoutewiseClient(budget_stack.settings) as rw:
        await record_trusted(rw, a_cost(Scope(org_id=org), "4", at=yesterday))  # late: yesterday's period
        await record_trusted(rw, a_cost(Scope(org_id=org), "1.5"))
        today = (await spent_when(rw, "org", org, 2)).budgets[0]
    midnight = datetime.now(paris).replace(hour=0, minute=0, second=0, microsecond=0)
    assert today.period_start == midnight.astimezone(UTC)
    assert today.current_spend_usd == Decimal("1.5")  # yesterday's late cost did not land today


async def test_reservations_are_settled_released_and_expire(budget_stack: RunningStack) -> None:
    org = new_org()
    create(budget_stack, f"org:{org}", "10", "--threshold", "50:notify")
    scope = Scope(org_id=org)
    alerts: list[BudgetAlert] = []
    async with RoutewiseClient(budget_stack.settings) as rw:

        async def on_alert(msg: nats.aio.msg.Msg) -> None:
            alerts.append(BudgetAlert.model_validate_json(msg.data))

        await rw.nc.subscribe(rw.subjects.org_alerts(org), cb=on_alert)
        settled_task, released_task, forgotten_task = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        first = await reserve(rw, scope, "1", task_id=settled_task)
        again = await reserve(rw, scope, "1", task_id=settled_task)  # idempotent per task
        assert first.admitted and again.reservation_id == first.reservation_id
        held = await reserve(rw, scope, "2", task_id=released_task)
        forgotten_first = await reserve(rw, scope, "3", task_id=forgotten_task)
        assert (await status(rw, "org", org)).budgets[0].reserved_usd == Decimal(6)

        await record_trusted(rw, a_cost(scope, "0.4", task_id=settled_task))  # the actual replaces the hold
        await spent_when(rw, "org", org, 1)
        repeat = await reserve(rw, scope, "1", task_id=settled_task)  # a settled task holds nothing again
        assert (repeat.admitted, repeat.reason) == (False, "already_settled")

        # a TaskRejected from anyone does not release a hold: only the decider, naming its reservation
        stray = TaskRejected(
            task_id=released_task,
            scope=scope,
            task_type="normal",
            reason=RejectionReason.budget_exhausted,
            detail="x",
        )
        await rw.publish(rw.subjects.event(stray), stray)
        with pytest.raises(RemoteError, match="no reservation") as wrong:
            await rw.request(
                rw.subjects.budget_release, ReleaseBudget(task_id=released_task, reservation_id=uuid.uuid4()), Released
            )
        assert wrong.value.code == "not_found"
        assert (await status(rw, "org", org)).budgets[0].reserved_usd == Decimal(5)
        assert held.reservation_id is not None
        released = await rw.request(
            rw.subjects.budget_release,
            ReleaseBudget(task_id=released_task, reservation_id=held.reservation_id),
            Released,
        )
        assert (released.released, released.status) == (True, "released")

        # a cost that arrives after its hold was released is charged all the same, and alerts
        await record_trusted(rw, a_cost(scope, "5", task_id=released_task))
        after_release = await spent_when(rw, "org", org, 2)
        assert after_release.budgets[0].current_spend_usd == Decimal("5.4")
        assert after_release.budgets[0].reserved_usd == Decimal(3)  # the forgotten task's hold only

        async def alerted() -> list[BudgetAlert]:
            return alerts

        await eventually(alerted)
        assert [(a.threshold_percent, a.spent_usd) for a in alerts] == [(50, Decimal("5.4"))]

        async def expired() -> BudgetStatus | None:
            s = await status(rw, "org", org)
            return s if s.budgets[0].reserved_usd == 0 else None

        await eventually(expired, timeout=TTL_S + 10)  # the unsettled reservation expired
        retried = await reserve(rw, scope, "0.1", task_id=forgotten_task)  # an expired task may try again
        assert retried.admitted and retried.reservation_id != forgotten_first.reservation_id


async def test_approval_extension_caps_and_restrictions(budget_stack: RunningStack) -> None:
    org = new_org()
    budget = create(
        budget_stack,
        f"org:{org}",
        "1",
        "--threshold",
        "50:require-approval",
        "--threshold",
        "80:restrict-models=tier:standard",
        "--max-per-request",
        "0.3",
    )
    scope = Scope(org_id=org)
    async with RoutewiseClient(budget_stack.settings) as rw:
        over_cap = await reserve(rw, scope, "0.31")
        assert (over_cap.admitted, over_cap.reason) == (False, "over_request_cap")
        await record_trusted(rw, a_cost(scope, "0.6"))
        await spent_when(rw, "org", org, 1)
        task = uuid.uuid4()
        needs = await reserve(rw, scope, "0.1", task_id=task)
        assert (needs.admitted, needs.reason) == (False, "approval_required")
        assert needs.restrictions.approval_required
        approved = budget_stack.cli("budgets", "approve", str(task), "--reason", "launch day", "--by", "cto@acme")
        assert approved.returncode == 0, approved.stderr
        assert (await reserve(rw, scope, "0.1", task_id=task)).admitted

        await record_trusted(rw, a_cost(scope, "0.25"))  # 85 %: heavy models restricted
        await spent_when(rw, "org", org, 2)
        approved_again = uuid.uuid4()
        budget_stack.cli("budgets", "approve", str(approved_again), "--by", "cto@acme")
        heavy = await reserve(rw, scope, "0.01", tier=Tier.heavy, task_id=approved_again)
        assert (heavy.admitted, heavy.reason) == (False, "model_restricted")
        assert heavy.restrictions.max_tier == Tier.standard
        light = await reserve(rw, scope, "0.01", model="gpt-4o-mini", tier=Tier.standard, task_id=approved_again)
        assert light.admitted
        full = uuid.uuid4()
        budget_stack.cli("budgets", "approve", str(full), "--by", "cto@acme")
        refused = await reserve(rw, scope, "0.2", model="gpt-4o-mini", tier=Tier.standard, task_id=full)
        assert (refused.admitted, refused.reason) == (False, "budget_exhausted")
        until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        extended = budget_stack.cli(
            "budgets",
            "extend",
            budget["id"],
            "--by",
            "1",
            "--until",
            until,
            "--reason",
            "incident",
            "--actor",
            "cfo@acme",
            "--json",
        )
        assert extended.returncode == 0, extended.stdout + extended.stderr
        assert json.loads(extended.stdout)["extensions"][0]["amount_usd"] == "1"
        after = await reserve(rw, scope, "0.2", model="gpt-4o-mini", tier=Tier.standard, task_id=full)
        assert after.admitted
        view = (await status(rw, "org", org)).budgets[0]
    assert (view.limit_usd, view.base_limit_usd) == (Decimal(2), Decimal(1))
    shown = budget_stack.cli("budgets", "status", f"org:{org}")
    assert "approval required" not in shown.stdout or "restrictions" in shown.stdout
    assert org in shown.stdout


async def test_alerts_follow_prints_new_alerts_as_they_happen(budget_stack: RunningStack) -> None:
    import sys

    org = new_org()
    create(budget_stack, f"org:{org}", "1", "--threshold", "50:notify")
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "routewise.cli",
        "alerts",
        "--org",
        org,
        "--follow",
        "--json",
        env=budget_stack.cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(1.5)  # the follower is waiting before the alert exists
        async with RoutewiseClient(budget_stack.settings) as rw:
            await record_trusted(rw, a_cost(Scope(org_id=org), "0.7"))
        assert follower.stdout is not None
        line = await asyncio.wait_for(follower.stdout.readline(), timeout=20)
    finally:
        follower.terminate()
        await follower.wait()
    alert = BudgetAlert.model_validate_json(line)
    assert (alert.scope_id, alert.threshold_percent, alert.spent_usd) == (org, 50, Decimal("0.7"))
