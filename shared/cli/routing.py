"""``routewise policies list|set`` and ``routewise tiers prefs get|set|delete``: how the selector routes."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer

from routewise.cli.common import (
    JsonOpt,
    NatsUrlOpt,
    app,
    ask,
    build,
    console,
    csv_list,
    fail,
    table,
    usd_option,
    who_am_i,
)
from routewise.cli.costs import tiers_app
from routewise.contracts.events import Tier, fixed_point
from routewise.contracts.routing import (
    DeleteTierPreferences,
    GetTierPreferences,
    ListPolicies,
    PolicyList,
    RoutingPolicy,
    SetPolicy,
    SetTierPreferences,
    TierPreferences,
    TierPreferencesReply,
)

policies_app = typer.Typer(help="Routing policies: which models each kind of task may use.", no_args_is_help=True)
app.add_typer(policies_app, name="policies")


def _usd(value: str | None, option: str, as_json: bool) -> Decimal | None:
    """A USD amount, or 'none' to clear it."""
    return None if value is not None and value.lower() == "none" else usd_option(value, option, as_json)


def _print_policies(policies: list[RoutingPolicy], title: str, default: str | None = None) -> None:
    rows = [
        [
            p.name + ("\n(default)" if p.name == default else ""),
            "\n".join(p.models),
            fixed_point(p.max_cost_per_task_usd) if p.max_cost_per_task_usd is not None else None,
            p.max_tokens,
            "\n".join(p.task_types),
        ]
        for p in policies
    ]
    columns = ["policy", "models (first = baseline)", "max $/task", "max tokens", "task types"]
    console.print(table(title, columns, rows))


@policies_app.command("list")
def policies_list(nats_url: NatsUrlOpt = None, as_json: JsonOpt = False) -> None:
    """List the routing policies and the task types each routes."""
    result = ask(nats_url, lambda s: s.routing_policies_list, ListPolicies(), PolicyList, as_json)
    if as_json:
        print(result.model_dump_json())
    else:
        _print_policies(result.policies, "Routing policies", result.default_policy)
        console.print(f"task types not listed use [bold]{result.default_policy}[/]")


@policies_app.command("set")
def policies_set(
    name: Annotated[str, typer.Argument(help="Policy name, e.g. normal, code or a new one.")],
    models: Annotated[
        str | None, typer.Option("--models", help="Models in order, comma-separated; the first is the baseline.")
    ] = None,
    max_cost: Annotated[
        str | None, typer.Option("--max-cost", help="Most a task may cost (USD, p90), or 'none'.")
    ] = None,
    max_tokens: Annotated[
        str | None, typer.Option("--max-tokens", help="Output token cap per task, or 'none'.")
    ] = None,
    task_types: Annotated[
        str | None, typer.Option("--task-types", help="Task types this policy routes (replaces its list).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    actor: Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a routing policy, or change one: options not given keep their current value."""
    known = ask(nats_url, lambda s: s.routing_policies_list, ListPolicies(), PolicyList, as_json)
    current = next((p for p in known.policies if p.name == name), None)
    if current is None and models is None:
        raise fail(f"policy {name!r} is new: give its --models", as_json, "invalid_request")
    tokens: int | None = current.max_tokens if current else None
    if max_tokens is not None:
        if max_tokens.lower() == "none":
            tokens = None
        elif not max_tokens.isdigit() or int(max_tokens) < 1:
            raise fail(
                f"--max-tokens must be a whole number >= 1 or 'none', not {max_tokens!r}", as_json, "invalid_request"
            )
        else:
            tokens = int(max_tokens)
    request = build(
        SetPolicy,
        as_json,
        name=name,
        description=description if description is not None else (current.description if current else ""),
        models=csv_list(models) if models is not None else (current.models if current else []),
        max_cost_per_task_usd=(
            _usd(max_cost, "--max-cost", as_json)
            if max_cost is not None
            else (current.max_cost_per_task_usd if current else None)
        ),
        max_tokens=tokens,
        task_types=csv_list(task_types),
        actor=actor or who_am_i(),
    )
    saved = ask(nats_url, lambda s: s.routing_policies_set, request, RoutingPolicy, as_json)
    if as_json:
        print(saved.model_dump_json())
    else:
        _print_policies([saved], "Routing policy saved")


prefs_app = typer.Typer(help="A workspace's tier preferences.", no_args_is_help=True)
tiers_app.add_typer(prefs_app, name="prefs")


def _print_prefs(reply: TierPreferencesReply, title: str) -> None:
    p = reply.preferences
    rows: list[list[object]] = [
        ["default tier", p.default_tier.value],
        ["min tier", p.min_tier.value if p.min_tier else None],
        ["max tier", p.max_tier.value if p.max_tier else None],
        ["max $ per request", fixed_point(p.max_cost_per_request_usd) if p.max_cost_per_request_usd else None],
        ["preferred providers", ", ".join(p.preferred_providers) or None],
        ["quality bias", p.quality_bias],
        ["auto escalation", p.auto_escalation],
        ["cache-aware routing", p.cache_aware_routing],
        ["fallback chain", p.fallback],
        ["changed", f"{p.updated_by} {p.updated_at:%Y-%m-%d %H:%M}" if p.updated_at else "never (defaults)"],
    ]
    console.print(table(f"{title}: {p.workspace_id}", ["preference", "value"], rows))


@prefs_app.command("get")
def prefs_get(
    workspace: Annotated[str, typer.Argument(help="Workspace, within its org: ORG/ID.")],
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a workspace's tier preferences (the defaults when none are stored)."""
    request = build(GetTierPreferences, as_json, workspace_id=workspace)
    result = ask(nats_url, lambda s: s.routing_tiers_get, request, TierPreferencesReply, as_json)
    if as_json:
        print(result.model_dump_json())
    else:
        _print_prefs(result, "Tier preferences" if result.stored else "Tier preferences (defaults, none stored)")


@prefs_app.command("set")
def prefs_set(
    workspace: Annotated[str, typer.Argument(help="Workspace, within its org: ORG/ID.")],
    default_tier: Annotated[Tier | None, typer.Option("--default-tier")] = None,
    min_tier: Annotated[str | None, typer.Option("--min-tier", help="A tier, or 'none'.")] = None,
    max_tier: Annotated[str | None, typer.Option("--max-tier", help="A tier, or 'none'.")] = None,
    max_cost: Annotated[str | None, typer.Option("--max-cost", help="USD per request (p90), or 'none'.")] = None,
    providers: Annotated[
        str | None, typer.Option("--providers", help="Preferred providers, comma-separated ('' for none).")
    ] = None,
    quality_bias: Annotated[float | None, typer.Option("--quality-bias", min=0, max=1)] = None,
    auto_escalation: Annotated[bool | None, typer.Option("--auto-escalation/--no-auto-escalation")] = None,
    cache_aware: Annotated[bool | None, typer.Option("--cache-aware/--no-cache-aware")] = None,
    fallback: Annotated[bool | None, typer.Option("--fallback/--no-fallback")] = None,
    actor: Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a workspace's tier preferences; options not given keep their current value."""
    current = ask(
        nats_url,
        lambda s: s.routing_tiers_get,
        build(GetTierPreferences, as_json, workspace_id=workspace),
        TierPreferencesReply,
        as_json,
    ).preferences
    changes: dict[str, object] = {}
    for field, value in (("min_tier", min_tier), ("max_tier", max_tier)):
        if value is not None:
            changes[field] = None if value.lower() == "none" else value.lower()
    if max_cost is not None:
        changes["max_cost_per_request_usd"] = _usd(max_cost, "--max-cost", as_json)
    if providers is not None:
        changes["preferred_providers"] = csv_list(providers)
    for field, flag in (
        ("default_tier", default_tier),
        ("quality_bias", quality_bias),
        ("auto_escalation", auto_escalation),
        ("cache_aware_routing", cache_aware),
        ("fallback", fallback),
    ):
        if flag is not None:
            changes[field] = flag
    body = current.model_dump(exclude={"updated_by", "updated_at"}) | changes
    request = build(
        SetTierPreferences, as_json, preferences=build(TierPreferences, as_json, **body), actor=actor or who_am_i()
    )
    result = ask(nats_url, lambda s: s.routing_tiers_set, request, TierPreferencesReply, as_json)
    if as_json:
        print(result.model_dump_json())
    else:
        _print_prefs(result, "Tier preferences saved")


@prefs_app.command("delete")
def prefs_delete(
    workspace: Annotated[str, typer.Argument(help="Workspace, within its org: ORG/ID.")],
    actor: Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a workspace's tier preferences: its tasks go back to the defaults."""
    request = build(DeleteTierPreferences, as_json, workspace_id=workspace, actor=actor or who_am_i())
    result = ask(nats_url, lambda s: s.routing_tiers_delete, request, TierPreferencesReply, as_json)
    if as_json:
        print(result.model_dump_json())
    else:
        console.print(f"deleted the tier preferences of {workspace}; its tasks use the defaults")
