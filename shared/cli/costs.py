"""``routewise estimate``, ``tiers``, ``prices``, ``accuracy`` and ``costs``: what calls cost, before and
after, and corrections of recorded costs."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from uuid import UUID

import typer

from routewise.cli.common import JsonOpt, NatsUrlOpt, app, ask, build, console, fail, table, usd_option, who_am_i
from routewise.contracts.catalog import ListModels, ModelList
from routewise.contracts.cost import (
    AdjustCost,
    CompareTiers,
    CostAdjustment,
    CostAdjustmentList,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
    GetEstimateAccuracy,
    ListCostAdjustments,
    ListPrices,
    PriceEntry,
    PriceList,
    RemovePrice,
    SetPrice,
    TierComparison,
)
from routewise.contracts.events import Scope, Tier


def _usd(amount: Decimal | None, places: int = 6) -> str:
    return "—" if amount is None else f"${amount:.{places}f}"


@app.command()
def estimate(
    prompt: Annotated[str, typer.Argument(help="The prompt to estimate.")],
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model (repeat for several) [default: the catalog's priced models]."),
    ] = None,
    task_type: Annotated[str, typer.Option("--type", help="Task type; picks the output-token prior.")] = "normal",
    output_tokens: Annotated[int | None, typer.Option("--output-tokens", help="Expected output tokens.")] = None,
    max_output_tokens: Annotated[
        int | None, typer.Option("--max-output-tokens", help="Cap (policy max_tokens).")
    ] = None,
    cached_tokens: Annotated[int, typer.Option("--cached-tokens", help="Input tokens read from cache.")] = 0,
    min_tier: Annotated[Tier | None, typer.Option("--min-tier", help="Recommend only this tier or above.")] = None,
    min_quality: Annotated[
        float | None, typer.Option("--min-quality", help="Recommend only this quality or above.")
    ] = None,
    org: Annotated[str | None, typer.Option("--org", help="Show the budget impact for this org.")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate what a prompt would cost on each model (p50 and p90), and recommend one."""
    if not models:  # the live catalog's models that have a price (registered ones included)
        catalog = ask(nats_url, lambda s: s.cost_models_list, ListModels(), ModelList, as_json)
        models = [e.model.id for e in catalog.models if e.routable]
    request = build(
        EstimateCost,
        as_json,
        prompt=prompt,
        models=models,
        task_type=task_type,
        expected_output_tokens=output_tokens,
        max_output_tokens=max_output_tokens,
        cached_input_tokens=cached_tokens,
        min_tier=min_tier,
        min_quality=min_quality,
        scope=build(Scope, as_json, org_id=org) if org else None,
    )
    result = ask(nats_url, lambda s: s.cost_estimate, request, CostEstimate, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            e.model,
            e.tier.value if e.tier else "—",
            f"{e.input_tokens}" if e.exact_token_count else f"≈{e.input_tokens}",
            f"{e.output_tokens_p50} / {e.output_tokens_p90} ({e.output_source})",
            _usd(e.cost_usd_p50),
            _usd(e.cost_usd_p90),
            "yes" if e.fits_context else f"no ({e.context_window})",
            e.budget_impact,
        ]
        for e in sorted(result.estimates, key=lambda e: e.cost_usd_p50)
    ]
    columns = ["model", "tier", "input tokens", "output p50 / p90", "cost p50", "cost p90", "fits", "budget impact"]
    console.print(table("Cost estimate (cheapest first)", columns, rows))
    if result.recommendation:
        console.print(f"recommended: [bold]{result.recommendation.model}[/] — {result.recommendation.reason}")
    else:
        console.print("no model meets the minimums")
    console.print("[dim]≈ approximate token count (not an OpenAI model)[/]")


tiers_app = typer.Typer(help="Cognitive tiers: what each costs and delivers.", invoke_without_command=True)
app.add_typer(tiers_app, name="tiers")


@tiers_app.callback()
def tiers(
    ctx: typer.Context,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Token profile to price.")] = 1000,
    output_tokens: Annotated[int, typer.Option("--output-tokens")] = 500,
    cached_tokens: Annotated[int, typer.Option("--cached-tokens")] = 0,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the tiers: quality range, cost range for a token profile, models, cache support."""
    if ctx.invoked_subcommand is not None:
        return
    request = build(
        CompareTiers, as_json, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_tokens
    )
    result = ask(nats_url, lambda s: s.cost_compare_tiers, request, TierComparison, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            t.tier.value,
            f"{t.quality_min:.2f}–{t.quality_max:.2f}",
            f"{_usd(t.cost_min_usd)} – {_usd(t.cost_max_usd)}",
            ", ".join(t.models),
            t.cache_support,
        ]
        for t in result.tiers
    ]
    profile = f"{input_tokens} in ({cached_tokens} cached) / {output_tokens} out"
    console.print(table(f"Tiers for {profile} tokens", ["tier", "quality", "cost", "models", "cache"], rows))


prices_app = typer.Typer(help="Prices: genai-prices plus this deployment's overrides.", no_args_is_help=True)
app.add_typer(prices_app, name="prices")


def _per_million(value: str | None, option: str, as_json: bool) -> Decimal | None:
    return usd_option(value, option, as_json, what="a decimal USD amount per million tokens")


def _print_prices(entries: list[PriceEntry], title: str) -> None:
    rows = [
        [
            f"{p.provider}/{p.model}" if "/" not in p.model else p.model,
            p.source,
            _usd(p.input_mtok, 4),
            _usd(p.output_mtok, 4),
            _usd(p.cache_read_mtok, 4),
            _usd(p.cache_write_mtok, 4),
            "yes" if p.tiered else "",
            p.context_window,
            f"{p.updated_by} {p.updated_at:%Y-%m-%d %H:%M}" if p.updated_by and p.updated_at else "",
        ]
        for p in entries
    ]
    columns = ["model", "source", "input", "output", "cache read", "cache write", "tiered", "context", "changed"]
    console.print(table(f"{title} (USD per million tokens)", columns, rows))


@prices_app.command("list")
def prices_list(
    models: Annotated[list[str] | None, typer.Argument(help="Show the price these models are charged at.")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List this deployment's overrides, or the price (and its source) of the models given."""
    result = ask(
        nats_url, lambda s: s.cost_prices_list, build(ListPrices, as_json, models=models or []), PriceList, as_json
    )
    if as_json:
        print(result.model_dump_json())
    elif not result.prices:
        console.print("no price overrides; every price comes from genai-prices")
    else:
        _print_prices(result.prices, "Prices" if models else "Price overrides")


@prices_app.command("set")
def prices_set(
    model: Annotated[str, typer.Argument(help="Model id, e.g. llama-3-70b-private or gpt-4o.")],
    provider: Annotated[str, typer.Option("--provider", help="Who serves it, e.g. openai or acme-gpu.")],
    input_price: Annotated[str, typer.Option("--input", help="USD per million input tokens.")],
    output_price: Annotated[str, typer.Option("--output", help="USD per million output tokens.")],
    cache_read: Annotated[str | None, typer.Option("--cache-read", help="USD per million cached input tokens.")] = None,
    cache_write: Annotated[
        str | None, typer.Option("--cache-write", help="USD per million cache-write tokens.")
    ] = None,
    context_window: Annotated[int | None, typer.Option("--context-window", help="Largest prompt, in tokens.")] = None,
    actor: Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or replace this deployment's price for a model (audited)."""
    request = build(
        SetPrice,
        as_json,
        model=model,
        provider=provider,
        input_mtok=_per_million(input_price, "--input", as_json),
        output_mtok=_per_million(output_price, "--output", as_json),
        cache_read_mtok=_per_million(cache_read, "--cache-read", as_json),
        cache_write_mtok=_per_million(cache_write, "--cache-write", as_json),
        context_window=context_window,
        actor=actor or who_am_i(),
    )
    entry = ask(nats_url, lambda s: s.cost_prices_set, request, PriceEntry, as_json)
    if as_json:
        print(entry.model_dump_json())
    else:
        _print_prices([entry], "Price override saved")


@prices_app.command("remove")
def prices_remove(
    model: Annotated[str, typer.Argument(help="Model id of the override.")],
    provider: Annotated[str, typer.Option("--provider", help="Provider of the override.")],
    actor: Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove an override: the model goes back to its genai-prices price (or has none)."""
    request = build(RemovePrice, as_json, model=model, provider=provider, actor=actor or who_am_i())
    result = ask(nats_url, lambda s: s.cost_prices_remove, request, PriceList, as_json)
    if as_json:
        print(result.model_dump_json())
    else:
        console.print(f"removed the price override for {provider}/{model}; {len(result.prices)} overrides remain")


@app.command()
def accuracy(
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only this task type.")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How far cost estimates were from actual costs, per model and task type."""
    request = build(GetEstimateAccuracy, as_json, model=model, task_type=task_type)
    result = ask(nats_url, lambda s: s.cost_accuracy, request, EstimateAccuracy, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            r.model,
            r.task_type,
            r.samples,
            f"{r.cost_mape_percent:.1f}%",
            f"{r.cost_bias_percent:+.1f}%",
            f"{r.output_mape_percent:.1f}%",
            f"{r.p90_coverage_percent:.0f}%",
        ]
        for r in result.rows
    ]
    columns = ["model", "task type", "samples", "cost MAPE", "cost bias", "output MAPE", "≤ p90"]
    console.print(table("Estimate vs actual", columns, rows) if rows else "no estimate has an actual cost yet")


costs_app = typer.Typer(help="Recorded costs: corrections and voids (audited).", no_args_is_help=True)
app.add_typer(costs_app, name="costs")


def _adjustment_row(a: CostAdjustment) -> list[object]:
    return [
        f"{a.at:%Y-%m-%d %H:%M:%S}",
        str(a.task_id),
        a.attempt,
        f"#{a.sequence}",
        a.model,
        _usd(a.previous_cost_usd),
        "void" if a.void else _usd(a.cost_usd),
        f"{'+' if a.delta_usd > 0 else '-'}{_usd(abs(a.delta_usd))}",
        a.actor,
        a.reason,
    ]


_ADJUSTMENT_COLUMNS = ["at", "task", "attempt", "adj.", "model", "before", "after", "delta", "by", "reason"]


@costs_app.command("adjust")
def costs_adjust(
    task_id: Annotated[UUID, typer.Argument(help="The task whose recorded cost is wrong.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit).")],
    cost: Annotated[str | None, typer.Option("--cost", help="The call's right cost, in USD.")] = None,
    void: Annotated[bool, typer.Option("--void", help="The cost should not count at all: it becomes 0.")] = False,
    attempt: Annotated[
        int, typer.Option("--attempt", min=1, help="Which call of the task (1: the decided model).")
    ] = 1,
    event: Annotated[
        UUID | None, typer.Option("--event", help="Which recorded cost of that call, when it has several.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--by", help="Who is adjusting it [default: user@host].")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Correct (--cost) or void (--void) a recorded cost: budgets (in the periods it was charged
    to), metrics and performance statistics follow it once; the change is audited."""
    if (cost is None) == (not void):
        raise fail("give either --cost USD or --void", as_json, "invalid_request")
    request = build(
        AdjustCost,
        as_json,
        task_id=task_id,
        attempt=attempt,
        cost_event_id=event,
        cost_usd=usd_option(cost, "--cost", as_json),
        void=void,
        reason=reason,
        actor=actor or who_am_i(),
    )
    result = ask(nats_url, lambda s: s.cost_adjust, request, CostAdjustment, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    console.print(table("Cost adjusted", _ADJUSTMENT_COLUMNS, [_adjustment_row(result)]))


@costs_app.command("adjustments")
def costs_adjustments(
    task_id: Annotated[UUID | None, typer.Argument(help="Only this task's.")] = None,
    org: Annotated[str | None, typer.Option("--org", help="Only this org's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="The latest N.")] = 50,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit of adjustments, newest first: who changed which cost, from what to what, and why."""
    request = build(
        ListCostAdjustments,
        as_json,
        task_id=task_id,
        scope=build(Scope, as_json, org_id=org) if org else None,
        limit=limit,
    )
    result = ask(nats_url, lambda s: s.cost_adjustments_list, request, CostAdjustmentList, as_json)
    if as_json:
        print(result.model_dump_json())
    elif not result.adjustments:
        console.print("no adjustment")
    else:
        console.print(table("Cost adjustments", _ADJUSTMENT_COLUMNS, [_adjustment_row(a) for a in result.adjustments]))
