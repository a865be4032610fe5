"""``routewise budgets …`` and ``routewise alerts``: budgets whose hard limits no reservation can pass."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated
from uuid import UUID

import typer

from routewise.cli.common import (
    JsonOpt,
    NatsUrlOpt,
    app,
    ask,
    build,
    bus_only,
    console,
    err_console,
    fail,
    table,
    usd_option,
    who_am_i,
)
from routewise.client.discovery import resolve_settings
from routewise.contracts.budget import (
    Approval,
    ApproveTask,
    Budget,
    BudgetList,
    BudgetStatus,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    GetBudget,
    GetBudgetStatus,
    ListBudgets,
    ThresholdSpec,
    UpdateBudget,
)
from routewise.contracts.events import BudgetAlert

budgets_app = typer.Typer(help="Budgets per org, team, user or workspace.", no_args_is_help=True)
app.add_typer(budgets_app, name="budgets")

ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        help="PERCENT:ACTION[,ACTION…] (repeat). Actions: notify, restrict-models[=MODEL|MODEL or =tier:TIER], "
        "downgrade, require-approval, block. Default: 50 notify; 80 notify,restrict-models=tier:versatile; "
        "95 notify,require-approval; 100 block.",
    ),
]
ActorOpt = Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")]


def parse_scope(text: str, as_json: bool) -> tuple[str, str]:
    kind, sep, ident = text.partition(":")
    if not sep or kind not in ("org", "team", "user", "workspace") or not ident:
        raise fail(
            f"a scope is TYPE:ID with TYPE org, team, user or workspace (e.g. org:acme, team:acme/core), not {text!r}",
            as_json,
            "invalid_request",
        )
    return kind, ident


def parse_threshold(text: str, as_json: bool) -> ThresholdSpec:
    percent, sep, rest = text.partition(":")
    if not sep or not percent.strip().isdigit():
        raise fail(
            f"a threshold is PERCENT:ACTION[,ACTION…], e.g. 80:notify,restrict-models; not {text!r}",
            as_json,
            "invalid_request",
        )
    actions: list[str] = []
    models: list[str] = []
    max_tier: str | None = None
    for part in filter(None, (p.strip() for p in rest.split(","))):
        action, _, arg = part.partition("=")
        actions.append(action)
        if arg and action == "restrict-models":
            if arg.startswith("tier:"):
                max_tier = arg.removeprefix("tier:")
            else:
                models.extend(m for m in arg.split("|") if m)
        elif arg:
            raise fail(f"only restrict-models takes a value, not {action!r}", as_json, "invalid_request")
    if "restrict-models" in actions and not models and max_tier is None:
        max_tier = "versatile"
    return build(
        ThresholdSpec, as_json, percent=int(percent), actions=actions, restricted_models=models, max_tier=max_tier
    )


def _when(value: str | None, option: str, as_json: bool) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option} must be an ISO date-time such as 2026-12-01T00:00:00+00:00, not {value!r}",
            as_json,
            "invalid_request",
        ) from None
    if parsed.tzinfo is None:
        raise fail(f"{option} needs a time zone offset (e.g. +00:00 or Z)", as_json, "invalid_request")
    return parsed


def _thresholds_text(b: Budget) -> str:
    def one(t: ThresholdSpec) -> str:
        extra = ""
        if t.max_tier:
            extra = f"≤{t.max_tier.value}"
        if t.restricted_models:
            extra += (" " if extra else "") + "not " + "|".join(t.restricted_models)
        return f"{t.percent}% {'+'.join(t.actions)}" + (f" ({extra})" if extra else "")

    return "; ".join(one(t) for t in b.thresholds)


def print_budget(b: Budget, title: str) -> None:
    rows = [
        ["id", str(b.id)],
        ["name", b.name],
        ["scope", f"{b.scope_type}:{b.scope_id}"],
        ["limit", f"${b.limit_usd} {b.period} ({b.mode})"],
        ["time zone", b.timezone],
        ["starts", b.starts_at.isoformat()],
        ["max per request", f"${b.max_cost_per_request}" if b.max_cost_per_request else "—"],
        ["thresholds", _thresholds_text(b)],
    ]
    for e in b.extensions:
        rows.append(["extension", f"+${e.amount_usd} until {e.expires_at.isoformat()} ({e.reason}, by {e.actor})"])
    console.print(table(title, ["", ""], rows))


@budgets_app.command("create")
def create(
    scope: Annotated[str, typer.Option("--scope", help="TYPE:ID, e.g. org:acme, team:acme/core, user:acme/ana.")],
    limit: Annotated[str, typer.Option("--limit", help="Limit in USD per period.")],
    period: Annotated[str, typer.Option("--period", help="daily, weekly, monthly, quarterly or total.")] = "monthly",
    thresholds: ThresholdOpt = None,
    hard: Annotated[
        bool, typer.Option("--hard/--soft", help="Hard: admit nothing beyond the limit. Soft: admit and alert.")
    ] = True,
    max_per_request: Annotated[
        str | None, typer.Option("--max-per-request", help="Refuse calls estimated above this (USD).")
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="Time zone of the period boundaries.")] = "UTC",
    start: Annotated[
        str | None, typer.Option("--start", help="ISO date-time the budget starts [default: now].")
    ] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a budget."""
    scope_type, scope_id = parse_scope(scope, as_json)
    request = build(
        CreateBudget,
        as_json,
        name=name or f"{period} {scope_type} {scope_id}",
        scope_type=scope_type,
        scope_id=scope_id,
        period=period,
        limit_usd=usd_option(limit, "--limit", as_json),
        mode="hard" if hard else "soft",
        timezone=tz,
        starts_at=_when(start, "--start", as_json),
        max_cost_per_request=usd_option(max_per_request, "--max-per-request", as_json),
        thresholds=[parse_threshold(t, as_json) for t in thresholds] if thresholds else None,
        actor=actor or who_am_i(),
    )
    budget = ask(nats_url, lambda s: s.budget_create, request, Budget, as_json)
    print(budget.model_dump_json()) if as_json else print_budget(budget, "Budget created")


@budgets_app.command("update")
def update(
    budget_id: Annotated[UUID, typer.Argument(help="The budget's id.")],
    limit: Annotated[str | None, typer.Option("--limit")] = None,
    thresholds: ThresholdOpt = None,
    hard: Annotated[bool | None, typer.Option("--hard/--soft")] = None,
    max_per_request: Annotated[
        str | None, typer.Option("--max-per-request", help="USD; 'none' removes the cap.")
    ] = None,
    tz: Annotated[str | None, typer.Option("--tz")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a budget's limit, thresholds, mode, per-request cap, time zone or name (audited)."""
    clear = max_per_request is not None and max_per_request.lower() == "none"
    request = build(
        UpdateBudget,
        as_json,
        budget_id=budget_id,
        actor=actor or who_am_i(),
        name=name,
        limit_usd=usd_option(limit, "--limit", as_json),
        mode=None if hard is None else ("hard" if hard else "soft"),
        timezone=tz,
        max_cost_per_request=None if clear else usd_option(max_per_request, "--max-per-request", as_json),
        clear_max_cost_per_request=clear,
        thresholds=[parse_threshold(t, as_json) for t in thresholds] if thresholds else None,
    )
    budget = ask(nats_url, lambda s: s.budget_update, request, Budget, as_json)
    print(budget.model_dump_json()) if as_json else print_budget(budget, "Budget updated")


@budgets_app.command("delete")
def delete(
    budget_id: Annotated[UUID, typer.Argument(help="The budget's id.")],
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a budget (its audit trail stays)."""
    budget = ask(
        nats_url,
        lambda s: s.budget_delete,
        build(DeleteBudget, as_json, budget_id=budget_id, actor=actor or who_am_i()),
        Budget,
        as_json,
    )
    print(budget.model_dump_json()) if as_json else console.print(f"deleted budget {budget.name!r} ({budget.id})")


@budgets_app.command("show")
def show(
    budget_id: Annotated[UUID, typer.Argument(help="The budget's id.")],
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One budget's settings."""
    budget = ask(nats_url, lambda s: s.budget_show, GetBudget(budget_id=budget_id), Budget, as_json)
    print(budget.model_dump_json()) if as_json else print_budget(budget, "Budget")


@budgets_app.command("list")
def list_budgets(
    scope: Annotated[str | None, typer.Argument(help="Only this scope (TYPE:ID).")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List budgets."""
    scope_type, scope_id = parse_scope(scope, as_json) if scope else (None, None)
    result = ask(
        nats_url,
        lambda s: s.budget_list,
        build(ListBudgets, as_json, scope_type=scope_type, scope_id=scope_id),
        BudgetList,
        as_json,
    )
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            str(b.id),
            b.name,
            f"{b.scope_type}:{b.scope_id}",
            f"${b.limit_usd}",
            b.period,
            b.mode,
            b.timezone,
            _thresholds_text(b),
        ]
        for b in result.budgets
    ]
    console.print(
        table("Budgets", ["id", "name", "scope", "limit", "period", "mode", "tz", "thresholds"], rows)
        if rows
        else "no budgets"
    )


@budgets_app.command("status")
def status(
    scope: Annotated[str, typer.Argument(help="TYPE:ID, e.g. org:acme.")],
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Spend, holds and restrictions in force for a scope, this period."""
    scope_type, scope_id = parse_scope(scope, as_json)
    result = ask(
        nats_url,
        lambda s: s.budget_status,
        build(GetBudgetStatus, as_json, scope_type=scope_type, scope_id=scope_id),
        BudgetStatus,
        as_json,
    )
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            v.name,
            f"{v.period_start:%Y-%m-%d %H:%M} → " + (f"{v.period_end:%Y-%m-%d %H:%M}" if v.period_end else "…"),
            f"${v.limit_usd}",
            f"${v.current_spend_usd}",
            f"${v.reserved_usd}",
            f"{v.percent_used}%",
            v.status,
        ]
        for v in result.budgets
    ]
    console.print(
        table(
            f"Budgets of {scope_type}:{scope_id} — {result.aggregate_status}",
            ["budget", "period (UTC)", "limit", "spent", "held", "used", "status"],
            rows,
        )
        if rows
        else f"{scope_type}:{scope_id} has no budget"
    )
    r = result.cost_restrictions
    console.print(
        f"all-time spend ${result.spent_usd} over {result.costs_recorded} calls; restrictions: "
        + (
            ", ".join(
                filter(
                    None,
                    [
                        "model downgrading" if r.model_downgrading else "",
                        f"max tier {r.max_tier.value}" if r.max_tier else "",
                        f"restricted {', '.join(r.restricted_models)}" if r.restricted_models else "",
                        f"max ${r.max_cost_per_request}/request" if r.max_cost_per_request else "",
                        "approval required" if r.approval_required else "",
                        "blocked" if r.block_non_essential else "",
                    ],
                )
            )
            or "none"
        )
    )


@budgets_app.command("approve")
def approve(
    task_id: Annotated[UUID, typer.Argument(help="The task refused for require-approval.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it may go ahead.")] = "approved",
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a task: its next reservation is not held back by require-approval (limits still apply)."""
    result = ask(
        nats_url,
        lambda s: s.budget_approve,
        build(ApproveTask, as_json, task_id=task_id, actor=actor or who_am_i(), reason=reason),
        Approval,
        as_json,
    )
    print(result.model_dump_json()) if as_json else console.print(
        f"approved task {task_id} ({reason}, by {result.actor})"
    )


@budgets_app.command("extend")
def extend(
    budget_id: Annotated[UUID, typer.Argument(help="The budget's id.")],
    by: Annotated[str, typer.Option("--by-usd", "--by", help="How much to add to the limit (USD).")],
    until: Annotated[str, typer.Option("--until", help="ISO date-time the extension ends.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    actor: Annotated[str | None, typer.Option("--actor", help="Who [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Raise a budget's limit temporarily (an emergency extension)."""
    request = build(
        ExtendBudget,
        as_json,
        budget_id=budget_id,
        amount_usd=usd_option(by, "--by", as_json),
        until=_when(until, "--until", as_json),
        reason=reason,
        actor=actor or who_am_i(),
    )
    budget = ask(nats_url, lambda s: s.budget_extend, request, Budget, as_json)
    print(budget.model_dump_json()) if as_json else print_budget(budget, "Budget extended")


@app.command()
def alerts(
    org: Annotated[str | None, typer.Option("--org", help="Only alerts of this org.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new alerts.")] = False,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Budget alerts, from the first kept (the alerts stream replays them), one per line with --json."""
    import nats

    from routewise.client import RoutewiseClient

    bus_only("routewise alerts (over HTTP: GET /api/v1/budgets/alerts)", as_json)
    settings = resolve_settings(nats_url)

    def show_alert(alert: BudgetAlert) -> None:
        if as_json:
            print(alert.model_dump_json(), flush=True)
        else:
            console.print(
                f"{alert.occurred_at:%Y-%m-%d %H:%M:%S} [bold]{alert.scope_type}:{alert.scope_id}[/] "
                f"{alert.budget_name!r} reached {alert.threshold_percent}% (${alert.spent_usd} of ${alert.limit_usd}, "
                f"{alert.percent}%): {', '.join(alert.actions)}"
            )

    async def go() -> int:
        count = 0
        async with RoutewiseClient(settings) as rw:
            js = rw.nc.jetstream()
            sub = await js.subscribe(
                settings.subjects.org_alerts(org) if org else f"{settings.subjects.budget_alerts}.>",
                ordered_consumer=True,
                stream=settings.subjects.alerts_stream.name,
            )
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0 if not follow else 3600)
                except nats.errors.TimeoutError:
                    if follow:
                        continue
                    return count
                show_alert(BudgetAlert.model_validate_json(msg.data))
                count += 1

    try:
        shown = asyncio.run(go())
    except KeyboardInterrupt:
        return
    except Exception as exc:
        code = getattr(exc, "code", "unavailable")
        raise fail(getattr(exc, "message", None) or f"cannot read alerts: {exc}", as_json, code) from None
    if not as_json and not shown:
        err_console.print("no alerts" + (f" for {org}" if org else ""))
