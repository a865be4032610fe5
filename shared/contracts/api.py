"""The management and reporting API over HTTP: one table of routes (``ROUTES``).

Each route is the HTTP face of one bus request: its ``request`` is the bus contract, sent as path
parameters plus query parameters (GET, DELETE) or a JSON body (POST, PATCH), and its ``reply`` is
the bus reply, as JSON. The gateway serves the table (``routewise.services.gateway.management``);
the CLI, given ``ROUTEWISE_API_URL``, finds in it the route of each request it would send on the bus
(``route_for``) and sends it over HTTP instead (``to_http``). One table, so the two cannot drift.

A few routes take a shape of their own (the original design's): ``subject`` None, an HTTP model
as ``request``, and a handler of the gateway's own (``/complete`` runs the task, for instance).

Never sent over HTTP: ``actor`` (the gateway names the key: ``key:<id> (<name>)``) and an event's
envelope (``event_id``, ``occurred_at``, ``schema_version``). Ids that contain ``/`` (a team's
``acme/platform``, a workspace's, a model's ``provider/model``) are the last path parameter, taken
whole (``{scope_id:path}``): ``/api/v1/budgets/status/team/acme/platform``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model

from routewise.contracts.budget import (
    AlertHistory,
    Approval,
    ApproveTask,
    Budget,
    BudgetAuditLog,
    BudgetList,
    BudgetStatus,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    GetBudget,
    GetBudgetStatus,
    ListAlerts,
    ListBudgetAudit,
    ListBudgets,
    UpdateBudget,
)
from routewise.contracts.catalog import ListModels, ModelEntry, ModelList, RegisterModel, RemoveModel
from routewise.contracts.cost import (
    AdjustCost,
    CompareTiers,
    CostAdjustment,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
    GetEstimateAccuracy,
    ListPrices,
    PriceEntry,
    PriceList,
    RemovePrice,
    SetPrice,
    TierComparison,
)
from routewise.contracts.events import (
    MAX_PROMPT_CHARS,
    CandidateScore,
    Contract,
    PolicyName,
    ProviderName,
    RejectionReason,
    Strategy,
    TaskArrived,
    TaskType,
    Tier,
    Usd,
)
from routewise.contracts.fields import MAX_TOKENS, PositiveUsd, ProviderId, TokenCount
from routewise.contracts.gateway import CreateKey, KeyCreated, KeyList, KeyRevoked, ListKeys, RevokeKey
from routewise.contracts.metrics import GetMetricsReport, MetricsReport
from routewise.contracts.performance import Performance, QueryPerformance
from routewise.contracts.routing import (
    DeleteTierPreferences,
    GetTierPreferences,
    ListPolicies,
    PolicyList,
    RoutingPolicy,
    RoutingPreview,
    SetPolicy,
    SetTierPreferences,
    TierPreferencesReply,
)

Method = Literal["GET", "POST", "PATCH", "DELETE"]


class Action(StrEnum):
    """What a route does, which decides the roles that may call it (the gateway's ``authorization``)."""

    read = "read"
    """Read within the key's scope: every role."""
    read_global = "read_global"
    """Read what is no org's (prices, policies, model statistics, tiers): every role."""
    route = "route"
    """Run tasks (chat completions, ``/complete``) and record feedback: member, admin."""
    manage = "manage"
    """Change things within the key's scope (budgets, approvals, extensions, tier preferences, keys): admin."""
    manage_org = "manage_org"
    """Change what moves spend on every budget of a task's scope chain, the org's included (cost
    adjustments): an org-wide admin key."""
    operate = "operate"
    """Change what is every org's (prices, routing policies): an org-wide admin key of an operator org."""


class Scoping(StrEnum):
    """Where a route's request names the org data it touches (the gateway checks it against the key)."""

    none = "none"
    """Nothing of an org."""
    scope = "scope"
    """``scope_type`` and ``scope_id``; when optional and not given, the key's own scope."""
    listing = "listing"
    """An optional scope filter (default: the key's own) and the org filter, which is always the
    key's org; the reply lists only what is within the key's scope."""
    workspace = "workspace"
    """``workspace_id`` (``ORG/ID``): a workspace is its org's, so only org-wide keys reach it."""
    task_scope = "task_scope"
    """A task's ``scope``: one the key may name — within it and, for a key narrower than its org,
    exactly the key's own (default: the key's own)."""
    budget = "budget"
    """``budget_id``: the budget's scope, looked up; one outside the key's is not found (404)."""
    task = "task"
    """``task_id``: the task's scope (its decision), looked up; one outside the key's is not found."""
    key = "key"
    """``id``: the API key's scope, looked up; one outside the key's is not found."""
    key_scope = "key_scope"
    """``scope`` of a new key (``org:ID[/team:ID][/user:ID]``): one the key may name, as a task's
    scope, and ``role`` no higher than the key's."""


SERVER_FIELDS = frozenset({"actor", "approver_scope", "event_id", "occurred_at", "schema_version"})
"""Request fields a client never sends over HTTP: the gateway sets the actor (and an approval's
``approver_scope``) from the key, and an event's envelope is made when it arrives."""

MAX_QUERY_PROMPT = 8000
"""A prompt in a query string (``GET /routing/decision``): longer ones go in a POST body."""


@dataclass(frozen=True)
class Route:
    """One HTTP route: what it takes and answers, what it does, and the bus request it translates."""

    name: str
    method: Method
    path: str
    request: type[BaseModel]
    reply: type[BaseModel]
    action: Action
    scoping: Scoping = Scoping.none
    subject: str | None = None
    """The ``Subjects`` field of the bus request it sends; None: the gateway answers it itself."""
    status: int = 200
    body: str | None = None
    """The request field whose content is the HTTP body (its fields also fill the path)."""
    summary: str = ""

    @property
    def path_params(self) -> dict[str, str]:
        """Each path parameter's name and its converter (``uuid``, ``path``; "" for a plain one),
        in the path's order."""
        return dict(re.findall(r"{(\w+)(?::(\w+))?}", self.path))

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(self.path_params)

    def placeholder(self, name: str) -> str:
        """How parameter ``name`` is written in the path (``{budget_id:uuid}``)."""
        converter = self.path_params[name]
        return f"{{{name}:{converter}}}" if converter else f"{{{name}}}"

    @property
    def in_query(self) -> bool:
        return self.method in ("GET", "DELETE")

    @property
    def source(self) -> type[BaseModel]:
        """The model whose fields the query or body carries."""
        if self.body is None:
            return self.request
        annotation = self.request.model_fields[self.body].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return annotation


# ------------------------------------------------------------------ the original design's shapes


class DecisionQuery(Contract):
    """A prompt and the task's options, as query parameters (``GET /routing/decision``, ``/recommendation``)."""

    prompt: str = Field(min_length=1, max_length=MAX_QUERY_PROMPT)
    task_type: TaskType = "normal"
    policy: PolicyName | None = None
    auto_route: bool = Field(default=True, description="let the learner route (the hybrid strategy)")
    strategy: Strategy | None = None
    quality_bias: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: PositiveUsd | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)


class RoutingMetadata(Contract):
    """Why the model was chosen: the prompt's features, the candidates and their scores."""

    pattern: str | None = None
    complexity: float | None = None
    quality_score: float | None = None
    """The chosen model's predicted quality (0..1)."""
    cost_estimate: Usd | None = None
    token_count: int | None = None
    """The prompt's input tokens."""
    estimated_output_tokens: int | None = None
    baseline_model: str | None = None
    baseline_cost_usd: Usd | None = None
    policy: str | None = None
    target_tier: Tier | None = None
    candidates: list[CandidateScore] = Field(default_factory=list)
    excluded: dict[str, str] = Field(default_factory=dict)
    """Models of the policy that were not candidates, and why."""


Confidence = Literal["high", "medium", "low"]


class ExplainedDecision(Contract):
    provider: str
    model: str
    tier: Tier
    confidence: Confidence
    confidence_score: float
    strategy_used: str
    reasoning: str
    fallback_used: bool
    """The requested strategy did not decide (hybrid fell back to complexity)."""
    fallback_reason: str | None = None
    experimental: bool = False
    fallback_chain: list[str] = Field(default_factory=list)
    estimated_cost_usd: Usd


class ExplainedRejection(Contract):
    reason: RejectionReason
    detail: str
    budget_id: UUID | None = None


class RoutingExplanation(Contract):
    """``GET /routing/decision``: what would be decided for the prompt and why (nothing reserved);
    ``decision`` or ``rejected``."""

    decision: ExplainedDecision | None
    rejected: ExplainedRejection | None = None
    metadata: RoutingMetadata


class RoutingRecommendation(Contract):
    """``GET /recommendation``: the model the prompt would be routed to (hybrid strategy)."""

    provider: str
    model: str
    tier: Tier
    confidence: Confidence
    strategy_used: str
    reasoning: str
    metadata: RoutingMetadata


class TierEstimateQuery(Contract):
    """``GET /api/v1/cognitive-tier/estimate-cost``: a prompt priced on every catalog model."""

    prompt: str = Field(min_length=1, max_length=MAX_QUERY_PROMPT)
    estimated_tokens: TokenCount | None = Field(default=None, description="expected output tokens")
    task_type: TaskType = "normal"


class TierPreferencesChange(Contract):
    """``PATCH``: the preferences to change; what is not sent keeps its value (``null`` clears)."""

    default_tier: Tier | None = None
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    max_cost_per_request_usd: PositiveUsd | None = None
    preferred_providers: list[ProviderId] | None = Field(default=None, max_length=50)
    cache_aware_routing: bool | None = None
    auto_escalation: bool | None = None
    fallback: bool | None = None
    quality_bias: float | None = Field(default=None, ge=0, le=1)


class CompleteRequest(Contract):
    """``POST /complete``: a prompt in, the routed and executed answer out."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=1000, ge=1, le=MAX_TOKENS)
    auto_route: bool = Field(default=False, description="let the learner route (the hybrid strategy)")
    task_type: TaskType = "normal"
    policy: PolicyName | None = None
    strategy: Strategy | None = None
    quality_bias: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: PositiveUsd | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    allowed_providers: list[ProviderName] | None = Field(default=None, max_length=50)


class CompleteResponse(Contract):
    response: str
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    cost: Usd
    """What the task's calls cost (a failed attempt's included)."""
    cache_hit: bool = False
    strategy_used: str
    confidence: Confidence
    task_id: UUID
    attempts: int
    routing_metadata: RoutingMetadata


# ------------------------------------------------------------------ the routes

PREFS = "/api/v1/cognitive-tier/preferences/{workspace_id:path}"
BUDGET = "/api/v1/budgets/{budget_id:uuid}"

ROUTES: tuple[Route, ...] = (
    # tier preferences, estimates and tiers (the cognitive-tier API)
    Route(
        "tiers.preferences.get",
        "GET",
        PREFS,
        GetTierPreferences,
        TierPreferencesReply,
        Action.read,
        Scoping.workspace,
        "routing_tiers_get",
        summary="A workspace's tier preferences (the defaults when none are stored)",
    ),
    Route(
        "tiers.preferences.set",
        "POST",
        PREFS,
        SetTierPreferences,
        TierPreferencesReply,
        Action.manage,
        Scoping.workspace,
        "routing_tiers_set",
        body="preferences",
        summary="Create or replace a workspace's tier preferences (fields not sent take their defaults)",
    ),
    Route(
        "tiers.preferences.update",
        "PATCH",
        PREFS,
        TierPreferencesChange,
        TierPreferencesReply,
        Action.manage,
        Scoping.workspace,
        summary="Change some of a workspace's tier preferences (the others keep their values)",
    ),
    Route(
        "tiers.preferences.delete",
        "DELETE",
        PREFS,
        DeleteTierPreferences,
        TierPreferencesReply,
        Action.manage,
        Scoping.workspace,
        "routing_tiers_delete",
        summary="Delete a workspace's tier preferences: its tasks use the defaults",
    ),
    Route(
        "tiers.estimate",
        "GET",
        "/api/v1/cognitive-tier/estimate-cost",
        TierEstimateQuery,
        CostEstimate,
        Action.read,
        Scoping.task_scope,
        summary="What a prompt would cost on every catalog model (p50, p90), with a recommendation",
    ),
    Route(
        "tiers.compare",
        "GET",
        "/api/v1/cognitive-tier/compare-tiers",
        CompareTiers,
        TierComparison,
        Action.read_global,
        subject="cost_compare_tiers",
        summary="The five tiers side by side: models, quality and cost ranges, cache support",
    ),
    # routing
    Route(
        "routing.explain",
        "GET",
        "/routing/decision",
        DecisionQuery,
        RoutingExplanation,
        Action.read,
        Scoping.task_scope,
        summary="What would be decided for a prompt, and why (nothing reserved, nothing published)",
    ),
    Route(
        "routing.preview",
        "POST",
        "/routing/decision",
        TaskArrived,
        RoutingPreview,
        Action.read,
        Scoping.task_scope,
        "routing_decide",
        summary="The selector's full preview of a task (nothing reserved, nothing published)",
    ),
    Route(
        "routing.recommendation",
        "GET",
        "/recommendation",
        DecisionQuery,
        RoutingRecommendation,
        Action.read,
        Scoping.task_scope,
        summary="The model a prompt would be routed to (the hybrid strategy unless auto_route=false)",
    ),
    Route(
        "routing.metrics",
        "GET",
        "/routing/metrics",
        GetMetricsReport,
        MetricsReport,
        Action.read,
        Scoping.scope,
        "metrics_report",
        summary="Savings against the baseline and routing metrics over `days` (default: the key's scope)",
    ),
    Route(
        "complete",
        "POST",
        "/complete",
        CompleteRequest,
        CompleteResponse,
        Action.route,
        Scoping.task_scope,
        summary="A prompt routed and run (the gateway's execution path): the answer, its cost and why",
    ),
    Route(
        "policies.list",
        "GET",
        "/api/v1/routing/policies",
        ListPolicies,
        PolicyList,
        Action.read_global,
        subject="routing_policies_list",
        summary="The routing policies and the task types each routes",
    ),
    Route(
        "policies.set",
        "POST",
        "/api/v1/routing/policies",
        SetPolicy,
        RoutingPolicy,
        Action.operate,
        subject="routing_policies_set",
        summary="Create or replace a routing policy (operator orgs' admins)",
    ),
    Route(
        "performance",
        "GET",
        "/api/v1/routing/performance",
        QueryPerformance,
        Performance,
        Action.read_global,
        subject="performance_query",
        summary="Each model's success rate, latency, cost and quality over a window, and its health",
    ),
    # budgets
    Route(
        "budgets.create",
        "POST",
        "/api/v1/budgets",
        CreateBudget,
        Budget,
        Action.manage,
        Scoping.scope,
        "budget_create",
        status=201,
        summary="Create a budget on a scope within the key's",
    ),
    Route(
        "budgets.list",
        "GET",
        "/api/v1/budgets",
        ListBudgets,
        BudgetList,
        Action.read,
        Scoping.listing,
        "budget_list",
        summary="The budgets within the key's scope (or on one scope within it)",
    ),
    Route(
        "budgets.status",
        "GET",
        "/api/v1/budgets/status/{scope_type}/{scope_id:path}",
        GetBudgetStatus,
        BudgetStatus,
        Action.read,
        Scoping.scope,
        "budget_status",
        summary="Spend, holds and restrictions in force on a scope, this period",
    ),
    Route(
        "budgets.alerts",
        "GET",
        "/api/v1/budgets/alerts",
        ListAlerts,
        AlertHistory,
        Action.read,
        Scoping.listing,
        "budget_alerts_list",
        summary="The alerts budgets within the key's scope fired, newest first",
    ),
    Route(
        "budgets.audit",
        "GET",
        "/api/v1/budgets/audit",
        ListBudgetAudit,
        BudgetAuditLog,
        Action.read,
        Scoping.listing,
        "budget_audit_list",
        summary="Who changed which budget or approved which task, newest first",
    ),
    Route(
        "budgets.approve",
        "POST",
        "/api/v1/budgets/approvals",
        ApproveTask,
        Approval,
        Action.manage,
        Scoping.task,
        "budget_approve",
        summary="Approve a task held back by require-approval, past the gates of the budgets the key holds"
        " (limits still apply)",
    ),
    Route(
        "budgets.get",
        "GET",
        BUDGET,
        GetBudget,
        Budget,
        Action.read,
        Scoping.budget,
        "budget_show",
        summary="One budget's settings",
    ),
    Route(
        "budgets.update",
        "PATCH",
        BUDGET,
        UpdateBudget,
        Budget,
        Action.manage,
        Scoping.budget,
        "budget_update",
        summary="Change a budget's limit, thresholds, mode, per-request cap, time zone or name",
    ),
    Route(
        "budgets.delete",
        "DELETE",
        BUDGET,
        DeleteBudget,
        Budget,
        Action.manage,
        Scoping.budget,
        "budget_delete",
        summary="Delete a budget (its audit trail stays)",
    ),
    Route(
        "budgets.extend",
        "POST",
        BUDGET + "/extensions",
        ExtendBudget,
        Budget,
        Action.manage,
        Scoping.budget,
        "budget_extend",
        summary="Raise a budget's limit until a date (an emergency extension)",
    ),
    # costs and prices
    Route(
        "cost.estimate",
        "POST",
        "/api/v1/cost/estimate",
        EstimateCost,
        CostEstimate,
        Action.read,
        Scoping.task_scope,
        "cost_estimate",
        summary="What a prompt would cost on each model, with the budget impact on the key's scope",
    ),
    Route(
        "cost.accuracy",
        "GET",
        "/api/v1/cost/accuracy",
        GetEstimateAccuracy,
        EstimateAccuracy,
        Action.read_global,
        subject="cost_accuracy",
        summary="How far estimates were from actual costs, per model and task type",
    ),
    Route(
        "cost.adjust",
        "POST",
        "/api/v1/cost/adjustments",
        AdjustCost,
        CostAdjustment,
        Action.manage_org,
        Scoping.task,
        "cost_adjust",
        status=201,
        summary="Correct or void a recorded cost of a task within the key's org (org-wide admins; audited; budgets,"
        " metrics and statistics follow it)",
    ),
    Route(
        "prices.list",
        "GET",
        "/api/v1/prices",
        ListPrices,
        PriceList,
        Action.read_global,
        subject="cost_prices_list",
        summary="The deployment's price overrides, or the price of each model named",
    ),
    Route(
        "prices.set",
        "POST",
        "/api/v1/prices",
        SetPrice,
        PriceEntry,
        Action.operate,
        subject="cost_prices_set",
        summary="Add or replace a price override (operator orgs' admins)",
    ),
    Route(
        "prices.remove",
        "DELETE",
        "/api/v1/prices/{provider}/{model:path}",
        RemovePrice,
        PriceList,
        Action.operate,
        subject="cost_prices_remove",
        summary="Remove a price override (operator orgs' admins)",
    ),
    # the model catalog: models registered at run time (cost-predictor keeps them)
    Route(
        "models.list",
        "GET",
        "/api/v1/models",
        ListModels,
        ModelList,
        Action.read_global,
        subject="cost_models_list",
        summary="The live catalog: shipped and registered models, their prices, whether each is routable",
    ),
    Route(
        "models.register",
        "POST",
        "/api/v1/models",
        RegisterModel,
        ModelEntry,
        Action.operate,
        subject="cost_models_register",
        status=201,
        summary="Register a model with its price: routable at once on every replica (operator orgs' admins)",
    ),
    Route(
        "models.remove",
        "DELETE",
        "/api/v1/models/{id}",
        RemoveModel,
        ModelList,
        Action.operate,
        subject="cost_models_remove",
        summary="Remove a registered model; its price override stays (operator orgs' admins)",
    ),
    # API keys
    Route(
        "keys.create",
        "POST",
        "/api/v1/keys",
        CreateKey,
        KeyCreated,
        Action.manage,
        Scoping.key_scope,
        "keys_create",
        status=201,
        summary="A new API key of the key's own scope (an org-wide key: any scope of its org), of its role or below"
        " (shown once, in this reply)",
    ),
    Route(
        "keys.list",
        "GET",
        "/api/v1/keys",
        ListKeys,
        KeyList,
        Action.manage,
        Scoping.listing,
        "keys_list",
        summary="The API keys within the key's scope, newest first (never their secrets)",
    ),
    Route(
        "keys.revoke",
        "DELETE",
        "/api/v1/keys/{id}",
        RevokeKey,
        KeyRevoked,
        Action.manage,
        Scoping.key,
        "keys_revoke",
        summary="Revoke an API key within the key's scope",
    ),
)


def route_for(request: type[BaseModel], reply: type[BaseModel]) -> Route | None:
    """The route that sends this bus request and answers this reply, if the API has one."""
    return next((r for r in ROUTES if r.subject and r.request is request and r.reply is reply), None)


# ------------------------------------------------------------------ the wire


@dataclass(frozen=True)
class HttpCall:
    method: Method
    path: str
    params: dict[str, Any]
    json: dict[str, Any] | None


def _value(route: Route, request: BaseModel, name: str) -> Any:
    if name in type(request).model_fields:
        return getattr(request, name)
    assert route.body is not None, f"{route.name}: no field {name}"
    return getattr(getattr(request, route.body), name)


def to_http(route: Route, request: BaseModel) -> HttpCall:
    """A bus request as the route's HTTP call: path, then query parameters or a JSON body. Values
    equal to their default are left out (the gateway applies the same defaults)."""
    path = route.path
    for name, converter in route.path_params.items():
        safe = "/" if converter == "path" else ""  # a {name:path} value keeps its slashes
        path = path.replace(route.placeholder(name), quote(str(_value(route, request, name)), safe=safe))
    source = request if route.body is None else getattr(request, route.body)
    data = source.model_dump(mode="json", exclude=set(SERVER_FIELDS) | set(route.path_fields), exclude_defaults=True)
    if route.body is not None:
        data.pop("updated_by", None)
        data.pop("updated_at", None)
    if route.in_query:
        return HttpCall(route.method, path, data, None)
    return HttpCall(route.method, path, {}, data)


def from_http(route: Route, path_params: dict[str, Any], data: dict[str, Any], **server: Any) -> dict[str, Any]:
    """The bus request's fields from what came over HTTP (``server``: the fields the gateway sets)."""
    if route.body is None:
        return {**data, **path_params, **server}
    nested = {**data, **{k: v for k, v in path_params.items() if k in route.source.model_fields}}
    top = {k: v for k, v in path_params.items() if k not in route.source.model_fields}
    return {route.body: nested, **top, **server}


_HTTP_MODELS: dict[str, type[BaseModel]] = {}


def http_model(route: Route) -> type[BaseModel] | None:
    """The query or body model of a route that forwards its bus request: the request's fields but
    the path's and those the server sets; a task's ``scope`` is optional (the key's by default).
    None when nothing is left to send."""
    if route.name in _HTTP_MODELS:
        return _HTTP_MODELS[route.name]
    source = route.source
    skip = SERVER_FIELDS | set(route.path_fields)
    if route.body is not None:
        skip |= {"updated_by", "updated_at"}
    fields: dict[str, Any] = {}
    for name, info in source.model_fields.items():
        if name in skip:
            continue
        if name == "scope" and route.scoping in (Scoping.task, Scoping.scope):
            continue  # a task's scope, looked up by the gateway; a budget status's chain is the bus's only
        if name == "scope" and route.scoping is Scoping.task_scope:
            fields[name] = (info.annotation | None, Field(default=None, description="default: the key's scope"))  # type: ignore[operator]
        else:
            fields[name] = (info.annotation, info)
    if not fields:
        return None
    kind = "Query" if route.in_query else "Body"
    model: type[BaseModel] = create_model(
        f"{source.__name__}{kind}",
        __config__=ConfigDict(extra="forbid"),
        __doc__=source.__doc__,
        **fields,
    )
    _HTTP_MODELS[route.name] = model
    return model
