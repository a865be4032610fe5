"""The management and reporting API: the routes of ``routewise.contracts.api.ROUTES``, served.

A route with a ``subject`` is generic: its HTTP input becomes its bus request (``from_http``), the
key's role and scope are checked (``authorization``), the request is asked on the bus the way the
gateway asks every service, and the reply goes back as JSON. A route without one has a handler
here (the original design's shapes: ``GET /routing/decision``, ``/recommendation``, the tier
estimate, ``PATCH`` of tier preferences) or in ``api.py`` (``/complete``, which runs the task).
No business rule lives here: what to check is ``authorization``'s, what to do is the services'.

To add a route: a row in ``ROUTES`` (and, when it forwards a new bus request, nothing else here).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from routewise.contracts.api import (
    ROUTES,
    Confidence,
    DecisionQuery,
    ExplainedDecision,
    ExplainedRejection,
    Route,
    RoutingExplanation,
    RoutingMetadata,
    RoutingRecommendation,
    Scoping,
    TierEstimateQuery,
    TierPreferencesChange,
    from_http,
    http_model,
)
from routewise.contracts.budget import AlertHistory, Budget, BudgetAuditLog, BudgetList, GetBudget
from routewise.contracts.cost import CostEstimate, EstimateCost
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import HIGH_CONFIDENCE, Constraints, ModelSelected, TaskArrived
from routewise.contracts.gateway import KeyList, ListKeys, parse_key_scope
from routewise.contracts.metrics import MEDIUM_CONFIDENCE
from routewise.contracts.routing import (
    Decision,
    GetDecision,
    GetTierPreferences,
    RoutingPreview,
    SetTierPreferences,
    TierPreferences,
    TierPreferencesReply,
)
from routewise.contracts.vocabulary import ErrorCode
from routewise.services.gateway import authorization, handlers, keys
from routewise.services.gateway.authorization import Denied
from routewise.services.gateway.handlers import GatewayDeps, Rejected

Reply = TypeVar("Reply", bound=BaseModel)


def deps_of(request: Request) -> GatewayDeps:
    deps: GatewayDeps = request.app.state.deps
    return deps


async def key_of(request: Request) -> keys.KeyScope:
    """The caller's key (``Authorization: Bearer <key>``): 401 without a valid one."""
    return await keys.authenticate(deps_of(request).pool, request.headers.get("authorization"))


DepsParam = Annotated[GatewayDeps, Depends(deps_of)]
KeyParam = Annotated[keys.KeyScope, Depends(key_of)]


async def ask(deps: GatewayDeps, subject: str, payload: BaseModel, reply: type[Reply]) -> Reply:
    return await handlers.ask(deps, getattr(deps.subjects, subject), payload, reply, deps.settings.request_timeout)


def permit(key: keys.KeyScope, route: Route, deps: GatewayDeps) -> None:
    authorization.permit(key, route.action, deps.settings.operator_orgs)


# ------------------------------------------------------------------ generic: a bus request, forwarded


def _defaults(route: Route, key: keys.KeyScope, values: dict[str, Any]) -> dict[str, Any]:
    """What the request leaves to the key: its own scope, its org."""
    fields = route.request.model_fields
    if route.scoping is Scoping.scope and values.get("scope_type") is None and not fields["scope_type"].is_required():
        values["scope_type"], values["scope_id"] = authorization.own_scope(key)
    elif route.scoping is Scoping.listing:
        org_field = "org_id" if "org_id" in fields else "org"
        authorization.require_org(key, values.get(org_field))
        values[org_field] = key.org_id
        own_org = key.team_id is None and key.user_id is None
        if "scope_type" in fields and values.get("scope_type") is None and not own_org:
            values["scope_type"], values["scope_id"] = authorization.own_scope(key)
    elif route.scoping is Scoping.task_scope and values.get("scope") is None:
        values["scope"] = key.scope
    return values


async def _checked(route: Route, key: keys.KeyScope, deps: GatewayDeps, request: Any) -> Any:
    """The request once its scope is checked against the key's (things named by id looked up)."""
    scoping = route.scoping
    if scoping in (Scoping.scope, Scoping.listing) and getattr(request, "scope_type", None) is not None:
        authorization.require(key, request.scope_type, request.scope_id)
    elif scoping is Scoping.workspace:
        holder = request if route.body is None else getattr(request, route.body)
        authorization.require(key, "workspace", holder.workspace_id)
    elif scoping is Scoping.task_scope:
        authorization.require_task(key, request.scope)
    elif scoping is Scoping.key_scope:
        authorization.require_new_key(key, parse_key_scope(request.scope), request.role)
    elif scoping is Scoping.budget:
        await budget_within(key, deps, request.budget_id)
    elif scoping is Scoping.task:
        decision = await task_within(key, deps, request.task_id)
        request = request.model_copy(update={"scope": decision.scope})
    elif scoping is Scoping.key:
        listed = await ask(deps, "keys_list", ListKeys(id=request.id, limit=1), KeyList)
        if not any(authorization.holds_task(key, parse_key_scope(k.scope)) for k in listed.keys):
            raise authorization.not_found(f"API key {request.id}")
    return request


async def budget_within(key: keys.KeyScope, deps: GatewayDeps, budget_id: UUID) -> Budget:
    """The budget, when it is within the key's scope; 404 otherwise (as for a budget that does not exist)."""
    what = f"budget {budget_id}"
    budget = await _found(deps, "budget_show", GetBudget(budget_id=budget_id), Budget, what)
    if not authorization.holds(key, budget.scope_type, budget.scope_id):
        raise authorization.not_found(what)
    return budget


async def task_within(key: keys.KeyScope, deps: GatewayDeps, task_id: UUID) -> Decision:
    """The task's decision, when its scope is within the key's; 404 otherwise."""
    what = f"task {task_id}"
    decision = await _found(deps, "routing_decision", GetDecision(task_id=task_id), Decision, what)
    if not authorization.holds_task(key, decision.scope):
        raise authorization.not_found(what)
    return decision


async def _found(deps: GatewayDeps, subject: str, request: BaseModel, reply: type[Reply], what: str) -> Reply:
    """The owning service's answer; its ``not_found`` as the gateway's 404 for ``what``."""
    try:
        return await ask(deps, subject, request, reply)
    except RemoteError as exc:
        if exc.code == ErrorCode.not_found:
            raise authorization.not_found(what) from None
        raise


def within(key: keys.KeyScope, reply: BaseModel) -> BaseModel:
    """A list reply with only what is within the key's scope (what a listing's filters already
    asked for; this makes sure)."""
    if isinstance(reply, BudgetList):
        return BudgetList(budgets=[b for b in reply.budgets if authorization.holds(key, b.scope_type, b.scope_id)])
    if isinstance(reply, AlertHistory):
        return AlertHistory(alerts=[a for a in reply.alerts if authorization.holds(key, a.scope_type, a.scope_id)])
    if isinstance(reply, BudgetAuditLog):
        return BudgetAuditLog(
            entries=[
                e
                for e in reply.entries
                if (
                    e.scope_type is not None
                    and e.scope_id is not None
                    and authorization.holds(key, e.scope_type, e.scope_id)
                )
                or (e.scope_type is None and e.task_scope is not None and authorization.holds_task(key, e.task_scope))
            ]
        )
    if isinstance(reply, KeyList):
        return KeyList(keys=[k for k in reply.keys if authorization.holds_task(key, parse_key_scope(k.scope))])
    return reply


async def forward(
    route: Route, key: keys.KeyScope, deps: GatewayDeps, path: dict[str, Any], data: dict[str, Any]
) -> Response:
    """One generic route: role, request, scope, the bus request, the reply within the key's scope."""
    assert route.subject is not None
    permit(key, route, deps)
    server = {
        name: value
        for name, value in (("actor", key.actor), ("approver_scope", key.scope))
        if name in route.request.model_fields
    }
    values = _defaults(route, key, from_http(route, path, data, **server))
    request = await _checked(route, key, deps, route.request.model_validate(values))
    try:
        reply = await ask(deps, route.subject, request, route.reply)
    except RemoteError as exc:
        if exc.code == ErrorCode.forbidden:  # the service refused the key's scope (an approval gate it does not hold)
            raise authorization.forbidden(exc.message) from None
        raise
    if route.scoping is Scoping.listing:
        reply = within(key, reply)
    return JSONResponse(reply.model_dump(mode="json"), route.status)


_PATH_TYPES = {"uuid": UUID}


def _path_type(route: Route, name: str) -> type:
    return _PATH_TYPES.get(route.path_params[name], str)


def forwarding(route: Route) -> Callable[..., Awaitable[Response]]:
    """The endpoint of a generic route: its signature (path parameters, then its query or body
    model) is the route's, so FastAPI validates and documents it."""
    model = http_model(route)

    async def endpoint(**kwargs: Any) -> Response:
        request: Request = kwargs.pop("request")
        key: keys.KeyScope = kwargs.pop("key")
        payload: BaseModel | None = kwargs.pop("payload", None)
        data = payload.model_dump(exclude_unset=True) if payload is not None else {}
        return await forward(route, key, deps_of(request), kwargs, data)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("request", kw, annotation=Request), inspect.Parameter("key", kw, annotation=KeyParam)]
    params += [inspect.Parameter(name, kw, annotation=_path_type(route, name)) for name in route.path_fields]
    if model is not None:
        annotation: Any = Annotated[model, Query()] if route.in_query else model
        params.append(inspect.Parameter("payload", kw, annotation=annotation))
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    endpoint.__name__ = route.name.replace(".", "_")
    endpoint.__doc__ = route.summary
    return endpoint


# ------------------------------------------------------------------ the original design's shapes


def confidence_of(score: float) -> Confidence:
    """A decision's confidence as the original design's label (the metrics report's buckets)."""
    return "high" if score >= HIGH_CONFIDENCE else "medium" if score >= MEDIUM_CONFIDENCE else "low"


def metadata_of(
    selected: ModelSelected | None, *, policy: str | None = None, target_tier: Any = None, excluded: Any = None
) -> RoutingMetadata:
    if selected is None:
        return RoutingMetadata(policy=policy, target_tier=target_tier, excluded=excluded or {})
    chosen = next((c for c in selected.candidates if c.model == selected.model), None)
    return RoutingMetadata(
        pattern=selected.pattern,
        complexity=selected.complexity,
        quality_score=chosen.predicted_quality if chosen else None,
        cost_estimate=selected.estimated_cost_usd,
        token_count=selected.estimated_input_tokens,
        estimated_output_tokens=selected.estimated_output_tokens,
        baseline_model=selected.baseline_model,
        baseline_cost_usd=selected.baseline_cost_usd,
        policy=policy or selected.policy,
        target_tier=target_tier,
        candidates=selected.candidates,
        excluded=excluded or {},
    )


def explanation(preview: RoutingPreview) -> RoutingExplanation:
    """The selector's preview in the original design's shape: the decision, and why."""
    metadata = metadata_of(
        preview.selected, policy=preview.policy, target_tier=preview.target_tier, excluded=preview.excluded
    )
    s, r = preview.selected, preview.rejected
    return RoutingExplanation(
        decision=None
        if s is None
        else ExplainedDecision(
            provider=s.provider,
            model=s.model,
            tier=s.tier,
            confidence=confidence_of(s.confidence),
            confidence_score=s.confidence,
            strategy_used=s.strategy,
            reasoning=s.reasoning,
            fallback_used=s.fallback_reason is not None,
            fallback_reason=s.fallback_reason,
            experimental=s.experimental,
            fallback_chain=s.fallback_chain,
            estimated_cost_usd=s.estimated_cost_usd,
        ),
        rejected=None if r is None else ExplainedRejection(reason=r.reason, detail=r.detail, budget_id=r.budget_id),
        metadata=metadata,
    )


def task_of(query: DecisionQuery, key: keys.KeyScope) -> TaskArrived:
    return TaskArrived(
        scope=key.scope,
        task_type=query.task_type,
        prompt=query.prompt,
        policy=query.policy,
        auto_route=query.auto_route,
        strategy=query.strategy,
        quality_bias=query.quality_bias,
        constraints=Constraints(max_cost_usd=query.max_cost_usd, min_quality=query.min_quality),
    )


def _route(name: str) -> Route:
    return next(r for r in ROUTES if r.name == name)


async def explain(request: Request, key: KeyParam, query: Annotated[DecisionQuery, Query()]) -> RoutingExplanation:
    """What the selector would decide for the prompt, and why: nothing reserved, nothing published."""
    deps = deps_of(request)
    permit(key, _route("routing.explain"), deps)
    return explanation(await ask(deps, "routing_decide", task_of(query, key), RoutingPreview))


async def recommend(request: Request, key: KeyParam, query: Annotated[DecisionQuery, Query()]) -> RoutingRecommendation:
    """The model the prompt would be routed to; a task that would be rejected is answered as a
    chat completion's rejection is (402, 403 or 422, with the reason)."""
    deps = deps_of(request)
    permit(key, _route("routing.recommendation"), deps)
    preview = await ask(deps, "routing_decide", task_of(query, key), RoutingPreview)
    if preview.selected is None:
        assert preview.rejected is not None
        raise Rejected(preview.rejected)
    s = preview.selected
    return RoutingRecommendation(
        provider=s.provider,
        model=s.model,
        tier=s.tier,
        confidence=confidence_of(s.confidence),
        strategy_used=s.strategy,
        reasoning=s.reasoning,
        metadata=metadata_of(s, policy=preview.policy, target_tier=preview.target_tier, excluded=preview.excluded),
    )


async def estimate_tiers(request: Request, key: KeyParam, query: Annotated[TierEstimateQuery, Query()]) -> CostEstimate:
    """The prompt priced on every routable catalog model (so every tier), with the recommended model
    and the budget impact on the key's scope. A model without a price is left out, as ``routewise
    estimate`` leaves it out: pricing it would fail the whole estimate."""
    deps = deps_of(request)
    permit(key, _route("tiers.estimate"), deps)
    live = deps.live_catalog
    estimate = EstimateCost(
        prompt=query.prompt,
        models=live.view.routable if live is not None else [m.id for m in deps.catalog.models],
        task_type=query.task_type,
        expected_output_tokens=query.estimated_tokens,
        scope=key.scope,
    )
    return await ask(deps, "cost_estimate", estimate, CostEstimate)


async def update_preferences(
    request: Request, key: KeyParam, workspace_id: str, change: TierPreferencesChange
) -> TierPreferencesReply:
    """The workspace's preferences with the fields sent changed: read, then replaced (as
    ``routewise tiers prefs set`` does)."""
    deps = deps_of(request)
    permit(key, _route("tiers.preferences.update"), deps)
    wanted = GetTierPreferences(workspace_id=workspace_id)
    authorization.require(key, "workspace", wanted.workspace_id)
    current = await ask(deps, "routing_tiers_get", wanted, TierPreferencesReply)
    merged = current.preferences.model_dump(exclude={"updated_by", "updated_at"}) | change.model_dump(
        exclude_unset=True
    )
    replace = SetTierPreferences(preferences=TierPreferences.model_validate(merged), actor=key.actor)
    return await ask(deps, "routing_tiers_set", replace, TierPreferencesReply)


OWN: dict[str, Callable[..., Awaitable[Any]]] = {
    "routing.explain": explain,
    "routing.recommendation": recommend,
    "tiers.estimate": estimate_tiers,
    "tiers.preferences.update": update_preferences,
}
"""The routes without a bus request of their own, by name (``/complete`` is ``api.py``'s)."""


ASKS = sorted(
    {r.subject for r in ROUTES if r.subject}
    | {"routing_decide", "cost_estimate", "routing_tiers_get", "routing_tiers_set"}  # the handlers above
    | {"budget_show", "routing_decision", "keys_list"}  # a budget's, a task's, a key's scope
)
"""Every bus request the management API sends (the gateway's NATS user must be allowed them)."""


def router(own: dict[str, Callable[..., Awaitable[Any]]]) -> APIRouter:
    """Every route of the table: generic ones forward their bus request; the others have a handler
    (here, or in ``own``: the execution path's)."""
    handlers_by_name = {**OWN, **own}
    out = APIRouter()
    for route in ROUTES:
        if route.subject is not None:
            endpoint = forwarding(route)
        else:
            assert route.name in handlers_by_name, f"route {route.name} has no bus request and no handler"
            endpoint = handlers_by_name[route.name]
        out.add_api_route(
            route.path,
            endpoint,
            methods=[route.method],
            status_code=route.status,
            response_model=route.reply,
            summary=route.summary,
            name=route.name,
            operation_id=route.name,
            tags=[route.path.split("/")[3] if route.path.startswith("/api/v1/") else route.path.split("/")[1]],
        )
    return out


__all__ = ["ASKS", "Denied", "DepsParam", "KeyParam", "deps_of", "key_of", "router"]
