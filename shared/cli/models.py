"""``routewise models register|list|remove``: the model catalog, changed at run time.

cost-predictor keeps the registered models and publishes the live catalog; every replica of
every service routes with a registered model as soon as this command returns.
"""

from __future__ import annotations

import json
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
    fail,
    table,
    usd_option,
    who_am_i,
)
from routewise.contracts.catalog import ListModels, ModelEntry, ModelList, RegisterModel, RemoveModel
from routewise.contracts.events import Tier
from routewise.contracts.routing import ListPolicies, PolicyList, RoutingPolicy, SetPolicy

models_app = typer.Typer(
    help="The model catalog: the shipped models and those registered at run time.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

ActorOpt = Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")]


def _usd(amount: Decimal | None) -> str:
    return "—" if amount is None else f"${amount:.4f}"


def _per_million(value: str | None, option: str, as_json: bool) -> Decimal | None:
    return usd_option(value, option, as_json, what="a decimal USD amount per million tokens")


def _source(entry: ModelEntry) -> str:
    if entry.source == "shipped":
        return "shipped"
    by = f" by {entry.registered_by}" if entry.registered_by else ""
    when = f" {entry.registered_at:%Y-%m-%d %H:%M}" if entry.registered_at else ""
    return f"registered{' (replaces shipped)' if entry.replaces_shipped else ''}{by}{when}"


def _print_models(entries: list[ModelEntry], title: str, policies: dict[str, list[str]] | None = None) -> None:
    rows = [
        [
            e.model.id,
            e.model.provider,
            e.model.tier.value,
            f"{e.model.quality_prior:.2f}",
            e.model.context_window,
            _usd(e.price.input_mtok) if e.price else "—",
            _usd(e.price.output_mtok) if e.price else "—",
            "yes" if e.routable else f"no: {e.reason}",
            ", ".join(policies.get(e.model.id, [])) if policies is not None else None,
            _source(e),
        ]
        for e in entries
    ]
    columns = ["model", "provider", "tier", "quality", "context", "input", "output", "routable", "policies", "source"]
    console.print(table(f"{title} (prices in USD per million tokens)", columns, rows))


def _with_model(policy: RoutingPolicy, model: str, actor: str) -> SetPolicy:
    """The policy with ``model`` added at its end (the first model, its baseline, stays)."""
    return SetPolicy(
        name=policy.name,
        description=policy.description,
        models=[*policy.models, model] if model not in policy.models else policy.models,
        max_cost_per_task_usd=policy.max_cost_per_task_usd,
        max_tokens=policy.max_tokens,
        actor=actor,
    )


@models_app.command("register")
def register(
    model: Annotated[str, typer.Argument(help="The model's id, as its provider names it, e.g. acme-small-1.")],
    provider: Annotated[str, typer.Option("--provider", help="Who serves it, e.g. openai or acme-gpu.")],
    tier: Annotated[Tier, typer.Option("--tier", help="Its cognitive tier.")],
    quality: Annotated[
        float, typer.Option("--quality", min=0, max=1, help="Expected answer quality 0..1 before any outcome.")
    ],
    context_window: Annotated[int, typer.Option("--context-window", help="Largest prompt, in tokens.")],
    capabilities: Annotated[
        list[str] | None, typer.Option("--capability", help="code, vision, long_context … (repeat for several).")
    ] = None,
    price_ref: Annotated[
        str | None, typer.Option("--price-ref", help="The id genai-prices knows it by, when another.")
    ] = None,
    input_price: Annotated[
        str | None,
        typer.Option("--input", help="USD per million input tokens (required unless genai-prices knows it)."),
    ] = None,
    output_price: Annotated[str | None, typer.Option("--output", help="USD per million output tokens.")] = None,
    cache_read: Annotated[str | None, typer.Option("--cache-read", help="USD per million cached input tokens.")] = None,
    cache_write: Annotated[
        str | None, typer.Option("--cache-write", help="USD per million cache-write tokens.")
    ] = None,
    policies: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Add it to this routing policy too (repeat for several), e.g. normal."),
    ] = None,
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model (or replace a registered or shipped one): routable at once on every replica.

    Its price becomes this deployment's price override for (provider, model). With --policy, the
    model is also appended to those routing policies: the tasks they route may run on it.
    """
    who = actor or who_am_i()
    request = build(
        RegisterModel,
        as_json,
        id=model,
        provider=provider,
        tier=tier,
        quality_prior=quality,
        context_window=context_window,
        capabilities=capabilities or [],
        price_ref=price_ref,
        input_mtok=_per_million(input_price, "--input", as_json),
        output_mtok=_per_million(output_price, "--output", as_json),
        cache_read_mtok=_per_million(cache_read, "--cache-read", as_json),
        cache_write_mtok=_per_million(cache_write, "--cache-write", as_json),
        actor=who,
    )
    entry = ask(nats_url, lambda s: s.cost_models_register, request, ModelEntry, as_json)
    changed: list[RoutingPolicy] = []
    if policies:
        known = ask(nats_url, lambda s: s.routing_policies_list, ListPolicies(), PolicyList, as_json)
        by_name = {p.name: p for p in known.policies}
        missing = [name for name in policies if name not in by_name]
        if missing:
            raise fail(
                f"{model} is registered, but there is no routing policy {', '.join(missing)} "
                f"(policies: {', '.join(sorted(by_name))})",
                as_json,
                "unknown_policy",
            )
        for name in dict.fromkeys(policies):
            update = _with_model(by_name[name], entry.model.id, who)
            changed.append(ask(nats_url, lambda s: s.routing_policies_set, update, RoutingPolicy, as_json))
    if as_json:
        print(json.dumps({"model": entry.model_dump(mode="json"), "policies": [p.name for p in changed]}))
        return
    _print_models([entry], "Model registered", {entry.model.id: [p.name for p in changed]})
    if not entry.routable:
        console.print(f"[yellow]not routable yet[/]: {entry.reason}")
    elif not changed:
        console.print(
            "routable now: name it as the model (forced), or add it to a routing policy "
            "(--policy, or `routewise policies set`) for tasks to be routed to it"
        )


@models_app.command("list")
def list_models(nats_url: NatsUrlOpt = None, as_json: JsonOpt = False) -> None:
    """List the live catalog: each model's tier, price, whether it is routable, its policies."""
    result = ask(nats_url, lambda s: s.cost_models_list, ListModels(), ModelList, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    policies: dict[str, list[str]] | None = None
    try:
        known = ask(nats_url, lambda s: s.routing_policies_list, ListPolicies(), PolicyList, as_json)
    except typer.Exit:  # the selector did not answer: the list without the policies column
        pass
    else:
        policies = {}
        for policy in known.policies:
            for name in policy.models:
                policies.setdefault(name, []).append(policy.name)
    _print_models(result.models, f"Models (catalog revision {result.revision})", policies)
    unpriced = [e.model.id for e in result.models if not e.routable]
    if unpriced:
        console.print(
            f"{len(unpriced)} not routable until priced: `routewise prices set MODEL --provider P --input USD "
            "--output USD`"
        )


@models_app.command("remove")
def remove(
    model: Annotated[str, typer.Argument(help="The registered model's id.")],
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a registered model (a shipped model of the same id comes back). Its price override
    stays, for the costs of calls already routed to it: `routewise prices remove` removes it."""
    request = build(RemoveModel, as_json, id=model, actor=actor or who_am_i())
    result = ask(nats_url, lambda s: s.cost_models_remove, request, ModelList, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    back = next((e for e in result.models if e.model.id == model), None)
    if back is not None:
        console.print(f"removed the registered {model}; the shipped {model} is back")
    else:
        console.print(f"removed {model}: it is no longer routable (routing policies naming it skip it)")
