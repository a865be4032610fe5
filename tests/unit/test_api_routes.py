"""The management API's one table, read from both ends: every bus request the CLI sends through a
route reaches the gateway as the same request (the actor aside, which the gateway sets)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import BaseModel
from starlette.routing import compile_path

from routewise.contracts.api import ROUTES, SERVER_FIELDS, Route, Scoping, from_http, http_model, route_for, to_http
from routewise.contracts.budget import (
    ApproveTask,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    GetBudget,
    GetBudgetStatus,
    ListAlerts,
    ListBudgetAudit,
    ListBudgets,
    ThresholdSpec,
    UpdateBudget,
)
from routewise.contracts.catalog import ListModels, RegisterModel, RemoveModel
from routewise.contracts.cost import (
    AdjustCost,
    CompareTiers,
    EstimateCost,
    GetEstimateAccuracy,
    ListPrices,
    RemovePrice,
    SetPrice,
)
from routewise.contracts.events import Constraints, Scope, TaskArrived, Tier
from routewise.contracts.gateway import CreateKey, ListKeys, RevokeKey, Role
from routewise.contracts.metrics import GetMetricsReport
from routewise.contracts.performance import QueryPerformance
from routewise.contracts.routing import (
    DeleteTierPreferences,
    GetTierPreferences,
    ListPolicies,
    SetPolicy,
    SetTierPreferences,
    TierPreferences,
)
from routewise.services.gateway import api

BUDGET = uuid.uuid4()
SAMPLES: dict[str, BaseModel] = {
    "tiers.preferences.get": GetTierPreferences(workspace_id="acme/research"),
    "tiers.preferences.set": SetTierPreferences(
        preferences=TierPreferences(workspace_id="acme/research", min_tier="standard", preferred_providers=["openai"]),
        actor="ana@laptop",
    ),
    "tiers.preferences.delete": DeleteTierPreferences(workspace_id="acme/research", actor="ana@laptop"),
    "tiers.compare": CompareTiers(input_tokens=2000, output_tokens=10),
    "routing.preview": TaskArrived(
        scope=Scope(org_id="acme", team_id="platform"),
        prompt="Sort a list in Python",
        task_type="code",
        auto_route=True,
        constraints=Constraints(max_cost_usd=Decimal("0.01"), allowed_providers=["openai", "anthropic"]),
    ),
    "routing.metrics": GetMetricsReport(days=30, scope_type="team", scope_id="acme/platform", by="model"),
    "policies.list": ListPolicies(),
    "policies.set": SetPolicy(name="cheap", models=["gpt-4o-mini", "gpt-5-nano"], task_types=["chat"], actor="ops"),
    "performance": QueryPerformance(model="gpt-4o", window="7d"),
    "budgets.create": CreateBudget(
        name="Q3",
        scope_type="team",
        scope_id="acme/platform",
        period="quarterly",
        limit_usd=Decimal("10000.50"),
        starts_at=datetime(2026, 7, 1, tzinfo=UTC),
        thresholds=[ThresholdSpec(percent=80, actions=["notify", "restrict-models"], max_tier="versatile")],
        actor="ana@laptop",
    ),
    "budgets.list": ListBudgets(scope_type="user", scope_id="acme/ana"),
    "budgets.status": GetBudgetStatus(scope_type="team", scope_id="acme/platform"),
    "budgets.alerts": ListAlerts(budget_id=BUDGET, limit=5),
    "budgets.audit": ListBudgetAudit(scope_type="org", scope_id="acme", before_id=40),
    "budgets.approve": ApproveTask(task_id=uuid.uuid4(), reason="the demo", actor="ana@laptop"),
    "budgets.get": GetBudget(budget_id=BUDGET),
    "budgets.update": UpdateBudget(budget_id=BUDGET, limit_usd=Decimal(20), clear_max_cost_per_request=True, actor="x"),
    "budgets.delete": DeleteBudget(budget_id=BUDGET, actor="x"),
    "budgets.extend": ExtendBudget(
        budget_id=BUDGET, amount_usd=Decimal(5), until=datetime(2027, 1, 1, tzinfo=UTC), reason="launch", actor="x"
    ),
    "cost.estimate": EstimateCost(prompt="hello", models=["gpt-4o", "claude-haiku-4-5"], scope=Scope(org_id="acme")),
    "cost.accuracy": GetEstimateAccuracy(model="gpt-4o"),
    "cost.adjust": AdjustCost(task_id=uuid.uuid4(), attempt=2, cost_usd=Decimal("0.0042"), reason="invoice", actor="x"),
    "prices.list": ListPrices(models=["gpt-4o", "openai/gpt-4o-mini"]),
    "prices.set": SetPrice(
        model="acme/llama-3", provider="selfhost", input_mtok=Decimal("0.1"), output_mtok=Decimal("0.2"), actor="ops"
    ),
    "prices.remove": RemovePrice(model="acme/llama-3", provider="selfhost", actor="ops"),
    "models.list": ListModels(),
    "models.register": RegisterModel(
        id="acme-small-1",
        provider="selfhost",
        tier=Tier.micro,
        quality_prior=0.8,
        context_window=32_000,
        capabilities=["code"],
        input_mtok=Decimal("0.05"),
        output_mtok=Decimal("0.1"),
        actor="ops",
    ),
    "models.remove": RemoveModel(id="acme-small-1", actor="ops"),
    "keys.create": CreateKey(scope="org:acme/team:platform", name="ci", role=Role.viewer, actor="ana@laptop"),
    "keys.list": ListKeys(org="acme", include_revoked=False, limit=10),
    "keys.revoke": RevokeKey(id="0123456789abcdef", actor="ana@laptop"),
}

FORWARDED = [r for r in ROUTES if r.subject is not None]


def test_every_forwarding_route_has_a_sample_here() -> None:
    assert {r.name for r in FORWARDED} == set(SAMPLES)


def test_route_names_and_method_paths_are_unique_and_every_other_route_has_its_own_shape() -> None:
    assert len({r.name for r in ROUTES}) == len(ROUTES)
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    for route in ROUTES:
        if route.subject is None:
            assert route_for(route.request, route.reply) is None  # never what the CLI sends


def _served(route: Route, call_path: str, query: dict[str, Any], body: dict[str, Any] | None) -> dict[str, Any]:
    """What the gateway makes of the call: the path matched as Starlette does, the query or body
    parsed by the route's model, then the bus request's fields."""
    regex, _, convertors = compile_path(route.path)
    match = regex.match(call_path)
    assert match is not None, (route.path, call_path)
    params = {k: convertors[k].convert(unquote(v)) for k, v in match.groupdict().items()}
    model = http_model(route)
    data = model.model_validate(query if route.in_query else body).model_dump(exclude_unset=True) if model else {}
    return from_http(
        route, params, data, **({"actor": "key:0123456789abcdef (ci)"} if "actor" in route.request.model_fields else {})
    )


@pytest.mark.parametrize("route", FORWARDED, ids=lambda r: r.name)
def test_a_request_sent_over_http_arrives_as_it_was_sent(route: Route) -> None:
    sample = SAMPLES[route.name]
    assert route_for(type(sample), route.reply) is route

    call = to_http(route, sample)
    values = _served(route, call.path, call.params, call.json)
    if route.scoping is Scoping.task_scope:
        values.setdefault("scope", getattr(sample, "scope", None))  # the gateway's default: the key's
    arrived = route.request.model_validate(values)

    expected = sample.model_copy(update={"actor": "key:0123456789abcdef (ci)"}) if "actor" in values else sample
    envelope = SERVER_FIELDS - {"actor"}  # an event's id and time are made anew when it arrives
    assert arrived.model_dump(exclude=envelope) == expected.model_dump(exclude=envelope)
    sent = {**call.params, **(call.json or {})}
    assert not SERVER_FIELDS & set(sent), "the actor and an event's envelope never travel over HTTP"


def test_ids_with_a_slash_are_the_last_path_parameter_taken_whole() -> None:
    status = next(r for r in ROUTES if r.name == "budgets.status")
    assert to_http(status, SAMPLES["budgets.status"]).path == "/api/v1/budgets/status/team/acme/platform"
    prices = next(r for r in ROUTES if r.name == "prices.remove")
    assert to_http(prices, SAMPLES["prices.remove"]).path == "/api/v1/prices/selfhost/acme/llama-3"
    prefs = next(r for r in ROUTES if r.name == "tiers.preferences.get")
    assert to_http(prefs, SAMPLES["tiers.preferences.get"]).path == "/api/v1/cognitive-tier/preferences/acme/research"


def test_the_gateway_serves_every_route_of_the_table_and_documents_it() -> None:
    spec = api.http_app(None).openapi()  # type: ignore[arg-type]
    for route in ROUTES:
        documented = spec["paths"][compile_path(route.path)[1]][route.method.lower()]
        assert documented["operationId"] == route.name


def test_an_approvals_approver_scope_is_the_gateways_to_set_never_a_clients() -> None:
    approve = next(r for r in ROUTES if r.name == "budgets.approve")
    body = http_model(approve)
    assert body is not None and "approver_scope" not in body.model_fields
    with pytest.raises(ValueError, match="approver_scope"):
        body.model_validate({"task_id": str(uuid.uuid4()), "reason": "x", "approver_scope": None})
