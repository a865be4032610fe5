"""The gateway's HTTP face: an OpenAI-compatible API (FastAPI; OpenAPI at /docs).

``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``, ``POST /v1/feedback``, and the
management and reporting API (``management.py``; ``POST /complete`` runs here). Every call needs
``Authorization: Bearer <key>`` (``routewise keys create``); the key's scope is the task's, its role
what it may do (``authorization.py``). Errors are OpenAI-shaped:
``{"error": {"message", "type", "param", "code", ...}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routewise.contracts.api import Action, CompleteRequest, CompleteResponse
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import ModelSelected, Scope
from routewise.contracts.vocabulary import PERMANENT, ErrorCode
from routewise.services.gateway import authorization, cache, handlers, keys, management
from routewise.services.gateway.domain import (
    AUTO,
    REJECTIONS,
    ROUTED_PREFIX,
    BadRequest,
    Knobs,
    Target,
    knobs_from,
    rejection_message,
    target_of,
    task_for,
)
from routewise.services.gateway.handlers import GatewayDeps, GatewayError, ProviderRefused, Rejected
from routewise.services.gateway.repository import CachedAnswer

CHAT = "/v1/chat/completions"
log = structlog.get_logger(__name__)


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completion request; every field not listed goes to the provider as sent."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=200, description="routewise/auto, routewise/<policy>, or a catalog model id (forced)")
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    routewise: Knobs | None = Field(default=None, description="Routewise's options (also as X-Routewise-* headers)")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: UUID
    quality: float = Field(ge=0, le=1)
    comment: str | None = Field(default=None, max_length=2000)


def error_body(message: str, type_: str, code: str | None, param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


_deps = management.deps_of
key_scope = management.key_of
DepsParam = management.DepsParam
KeyParam = management.KeyParam


def http_app(deps: GatewayDeps) -> FastAPI:
    """The gateway's API over its dependencies (``Service.http``)."""
    app = FastAPI(
        title="Routewise gateway",
        summary="OpenAI-compatible: routes each call, runs it, falls back, records the exact cost",
        version="1",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.deps = deps
    app.add_exception_handler(keys.InvalidApiKey, _invalid_key)
    app.add_exception_handler(authorization.Denied, _denied)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(ValidationError, _invalid_request)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(Rejected, _rejected_error)
    app.add_exception_handler(RoutewiseError, _routewise_error)
    app.add_exception_handler(Exception, _internal)
    app.middleware("http")(_count)
    app.add_api_route(CHAT, chat_completions, methods=["POST"], response_model=None, tags=["v1"])
    app.add_api_route("/v1/models", list_models, methods=["GET"], tags=["v1"])
    app.add_api_route("/v1/feedback", record_feedback, methods=["POST"], status_code=202, tags=["v1"])
    app.include_router(management.router({"complete": complete}))
    return app


async def _count(request: Request, call_next: Any) -> Response:
    """Every answer counted by route (its template: ``/api/v1/budgets/{budget_id}``) and status (a
    401 or 400 too); a path no route serves is ``other``."""
    response: Response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", None) or "other"
    _deps(request).meters.requests.labels(path, str(response.status_code)).inc()
    return response


# --- errors ---------------------------------------------------------------------------------


async def _invalid_key(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, keys.InvalidApiKey)
    return JSONResponse(
        error_body(exc.message, "invalid_request_error", keys.INVALID_API_KEY, reason=exc.reason),
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _invalid_body(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    return JSONResponse(
        error_body(f"{where or 'body'}: {first['msg']}", "invalid_request_error", "invalid_request", where or None),
        status_code=400,
    )


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return JSONResponse(error_body(exc.message, "invalid_request_error", "invalid_request", exc.param), 400)


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, authorization.Denied)
    type_ = "permission_error" if exc.status == 403 else "invalid_request_error"
    return JSONResponse(error_body(exc.message, type_, exc.code), exc.status)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A request the HTTP shape let through but its bus contract refuses (a field's rule)."""
    assert isinstance(exc, ValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse(
        error_body(f"{where or 'request'}: {first['msg']}", "invalid_request_error", "invalid_request", where or None),
        status_code=400,
    )


STATUS: dict[str, int] = {
    ErrorCode.not_found: 404,
    ErrorCode.task_rejected: 422,
    ErrorCode.unavailable: 503,
    ErrorCode.timeout: 504,
    ErrorCode.internal: 500,
}
"""The HTTP status of an error a service answered (or the gateway raised) by its code: any other
permanent code (the request as asked can never succeed) is a 400."""


def status_of(code: str) -> int:
    return STATUS.get(code, 400 if code in PERMANENT else 502)


async def _routewise_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoutewiseError)
    status = status_of(str(exc.code))
    type_ = "invalid_request_error" if status < 500 else "api_error"
    return JSONResponse(error_body(exc.message, type_, str(exc.code)), status)


async def _rejected_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejected)
    return _rejected(exc, None)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("gateway request failed", path=request.url.path, exc_info=exc)
    return JSONResponse(error_body("the gateway failed to answer; see its log", "api_error", "internal"), 500)


# --- routes ---------------------------------------------------------------------------------


async def chat_completions(body: ChatCompletionRequest, request: Request, deps: DepsParam, key: KeyParam) -> Response:
    """A chat completion, routed by Routewise (``model``: ``routewise/auto``, ``routewise/<policy>``)
    or on the model named (forced; still budget-checked and recorded). Non-streaming or SSE."""
    authorization.permit(key, Action.route)
    started = time.perf_counter()
    raw = body.model_dump(exclude_unset=True, mode="json")
    scope = key.task_scope(body.user)
    knobs = knobs_from(raw, request.headers)
    target = target_of(body.model, await handlers.catalog_ids(deps, body.model))
    task = task_for(raw, knobs, target, scope)
    use_cache = cache.wanted(knobs, scope.org_id, deps.settings.gateway_cache_orgs)
    cache_key = cache.key_of(scope.org_id, body.model, raw, knobs) if use_cache else None
    parent = propagate.extract(dict(request.headers))
    with deps.tracer.start_as_current_span(f"POST {CHAT}", context=parent, kind=SpanKind.SERVER) as span:
        span.set_attributes({"http.request.method": "POST", "http.route": CHAT, "routewise.task_id": str(task.task_id)})
        trace_id = format(span.get_span_context().trace_id, "032x")
        try:
            response = await _answer(raw, task, deps, trace_id, started, cache_key)
        except (Rejected, GatewayError, ProviderRefused) as exc:
            response = _failure(exc, str(task.task_id), trace_id)
        span.set_attribute("http.response.status_code", response.status_code)
    return response


def _failure(exc: Rejected | GatewayError | ProviderRefused, task_id: str, trace_id: str) -> Response:
    """A task that got no answer: its rejection, the gateway's own error, or the provider's refusal."""
    if isinstance(exc, Rejected):
        return _rejected(exc, trace_id)
    if isinstance(exc, ProviderRefused):
        return _provider_refused(exc, trace_id)
    return JSONResponse(
        error_body(exc.message, exc.type, exc.code, **exc.extra),
        exc.status,
        headers={"X-Routewise-Task-Id": task_id, "X-Routewise-Trace-Id": trace_id},
    )


async def complete(body: CompleteRequest, request: Request, deps: DepsParam, key: KeyParam) -> Response:
    """A prompt routed and run through the gateway's own execution path (decision, provider call,
    fallbacks, the recorded cost): the answer, with its strategy, confidence and routing metadata."""
    authorization.permit(key, Action.route)
    started = time.perf_counter()
    raw: dict[str, Any] = {
        "model": AUTO if body.policy is None else f"{ROUTED_PREFIX}{body.policy}",
        "messages": [{"role": "user", "content": body.prompt}],
        "max_tokens": body.max_tokens,
    }
    knobs = Knobs(
        task_type=body.task_type,
        quality_bias=body.quality_bias,
        max_cost_usd=body.max_cost_usd,
        min_quality=body.min_quality,
        allowed_providers=body.allowed_providers,
        strategy=body.strategy,
    )
    task = task_for(raw, knobs, Target(policy=body.policy), key.scope).model_copy(
        update={"auto_route": body.auto_route}
    )
    parent = propagate.extract(dict(request.headers))
    with deps.tracer.start_as_current_span("POST /complete", context=parent, kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {"http.request.method": "POST", "http.route": "/complete", "routewise.task_id": str(task.task_id)}
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
        try:
            done = await handlers.complete(raw, task, deps)
        except (Rejected, GatewayError, ProviderRefused) as exc:
            return _failure(exc, str(task.task_id), trace_id)
        deps.meters.added_latency.observe(max(time.perf_counter() - started - done.provider_ms / 1000, 0.0))
        usage = done.body.get("usage") or {}
        decision = done.decision
        answer = CompleteResponse(
            response=_text_of(done.body),
            provider=_provider_of(deps, done.model, decision),
            model=done.model,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            cost=done.spent,
            strategy_used=decision.strategy,
            confidence=management.confidence_of(decision.confidence),
            task_id=decision.task_id,
            attempts=done.attempts,
            routing_metadata=management.metadata_of(decision),
        )
        headers = routing_headers(decision, done.model, deps, trace_id, done.attempts, "off")
        headers["X-Routewise-Cost-Usd"] = _usd(done.spent)
        return JSONResponse(answer.model_dump(mode="json"), headers=headers)


def _text_of(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _provider_of(deps: GatewayDeps, model: str, decision: ModelSelected) -> str:
    entry = deps.catalog.get(model)
    return entry.provider if entry else decision.provider


async def _answer(
    raw: dict[str, Any], task: Any, deps: GatewayDeps, trace_id: str, started: float, cache_key: bytes | None
) -> Response:
    """From the response cache when the request uses it and an answer is stored, else routed and called."""
    if cache_key is not None:
        entry = await handlers.cached(deps, task.scope.org_id, cache_key)
        if entry is not None:
            return await _hit(raw, task, entry, deps, trace_id, started)
    if raw.get("stream"):
        return await _stream(raw, task, deps, trace_id, cache_key)
    return await _complete(raw, task, deps, trace_id, started, cache_key)


async def _hit(
    raw: dict[str, Any], task: Any, entry: CachedAnswer, deps: GatewayDeps, trace_id: str, started: float
) -> Response:
    """A stored answer, as JSON or replayed as SSE: $0, no decision, no provider call; recorded as a
    cached task (its CostRecorded carries the cost avoided)."""
    stream = bool(raw.get("stream"))
    await handlers.record_hit(deps, task, entry, stream=stream, ms=(time.perf_counter() - started) * 1000)
    deps.meters.cache.labels("hit").inc()
    model_entry = deps.catalog.get(entry.model)
    headers = {
        "X-Routewise-Task-Id": str(task.task_id),
        "X-Routewise-Model": entry.model,
        "X-Routewise-Tier": model_entry.tier.value if model_entry else "unknown",
        "X-Routewise-Strategy": "cache",
        "X-Routewise-Attempts": "0",
        "X-Routewise-Cache": "hit",
        "X-Routewise-Cost-Usd": "0",
        "X-Routewise-Cache-Avoided-Usd": _usd(entry.cost_usd),
        "X-Routewise-Trace-Id": trace_id,
    }
    if not stream:
        return JSONResponse(entry.answer, headers=headers)
    wants_usage = bool((raw.get("stream_options") or {}).get("include_usage"))
    chunks = cache.replay(entry.answer, include_usage=wants_usage)
    return StreamingResponse(_replayed(chunks), media_type="text/event-stream", headers=headers)


async def _replayed(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def routing_headers(
    decision: ModelSelected, model: str, deps: GatewayDeps, trace_id: str, attempts: int, cache_status: str
) -> dict[str, str]:
    entry = deps.catalog.get(model)
    return {
        "X-Routewise-Task-Id": str(decision.task_id),
        "X-Routewise-Model": model,
        "X-Routewise-Tier": entry.tier.value if entry else decision.tier.value,
        "X-Routewise-Strategy": decision.strategy,
        "X-Routewise-Attempts": str(attempts),
        "X-Routewise-Cache": cache_status,
        "X-Routewise-Trace-Id": trace_id,
    }


async def _complete(
    raw: dict[str, Any], task: Any, deps: GatewayDeps, trace_id: str, started: float, cache_key: bytes | None
) -> Response:
    done = await handlers.complete(raw, task, deps, cache_key)
    status = "off" if cache_key is None else "miss"
    headers = routing_headers(done.decision, done.model, deps, trace_id, done.attempts, status)
    headers["X-Routewise-Cost-Usd"] = _usd(done.spent)
    deps.meters.cache.labels(status).inc()
    deps.meters.added_latency.observe(max(time.perf_counter() - started - done.provider_ms / 1000, 0.0))
    return JSONResponse(done.body, headers=headers)


async def _stream(
    raw: dict[str, Any], task: Any, deps: GatewayDeps, trace_id: str, cache_key: bytes | None
) -> Response:
    opened = await handlers.open_stream(raw, task, deps, cache_key)
    status = "off" if cache_key is None else "miss"
    headers = routing_headers(opened.decision, opened.model, deps, trace_id, opened.attempts, status)
    # the stream's own cost is known only at its end: the header says what failed attempts cost before it
    headers["X-Routewise-Cost-Usd-Before-Stream"] = _usd(opened.spent_before)
    deps.meters.cache.labels(status).inc()
    return StreamingResponse(_sse(opened), media_type="text/event-stream", headers=headers)


async def _sse(opened: handlers.Streaming) -> AsyncIterator[bytes]:
    try:
        async for chunk in opened.chunks:
            if not opened.wants_usage and chunk.get("usage") and not chunk.get("choices"):
                continue  # the usage chunk the gateway asked for, not the client
            if not opened.wants_usage:
                chunk.pop("usage", None)
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    except Exception as exc:
        failure = handlers.failure_of(exc)
        body = error_body(f"the provider's stream failed: {failure.detail}", "api_error", failure.error_type)
        yield b"data: " + json.dumps(body).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _usd(amount: Any) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def _rejected(exc: Rejected, trace_id: str | None) -> Response:
    r = exc.rejection
    http = REJECTIONS[r.reason]
    extra = {
        "reason": r.reason.value,
        "task_id": str(r.task_id),
        "budget_id": str(r.budget_id) if r.budget_id else None,
    }
    return JSONResponse(
        error_body(rejection_message(r.reason, r.detail, str(r.task_id)), http.type, http.code, **extra),
        http.status,
        headers={"X-Routewise-Task-Id": str(r.task_id)} | ({"X-Routewise-Trace-Id": trace_id} if trace_id else {}),
    )


def _provider_refused(exc: ProviderRefused, trace_id: str) -> Response:
    body = exc.body if isinstance(exc.body, dict) and "error" in exc.body else None
    if body is None:
        detail = exc.body if isinstance(exc.body, dict) else {"message": str(exc.body)}
        body = {"error": {"type": "invalid_request_error", "code": None, "param": None, **detail}}
    headers = {
        "X-Routewise-Task-Id": str(exc.decision.task_id),
        "X-Routewise-Model": exc.model,
        "X-Routewise-Attempts": str(exc.attempts),
        "X-Routewise-Cost-Usd": _usd(exc.spent),
        "X-Routewise-Trace-Id": trace_id,
    }
    return JSONResponse(body, exc.status, headers=headers)


async def list_models(deps: DepsParam, key: KeyParam) -> dict[str, Any]:
    """Routewise's routed names (``routewise/auto``, ``routewise/<policy>``) and the catalog's models."""
    authorization.permit(key, Action.read_global)
    created = 0
    data = [{"id": AUTO, "object": "model", "created": created, "owned_by": "routewise"}]
    data += [
        {"id": f"{ROUTED_PREFIX}{name}", "object": "model", "created": created, "owned_by": "routewise"}
        for name in await handlers.policies(deps)
        if f"{ROUTED_PREFIX}{name}" != AUTO
    ]
    data += [
        {"id": m.id, "object": "model", "created": created, "owned_by": m.provider, "tier": m.tier.value}
        for m in deps.catalog.models
    ]
    return {"object": "list", "data": data}


async def record_feedback(body: FeedbackRequest, deps: DepsParam, key: KeyParam) -> Response:
    """How good a task's answer was (0..1): FeedbackRecorded, for the model that answered it (a task
    within the key's scope)."""
    authorization.permit(key, Action.route)
    scope: Scope = key.scope
    try:
        event_id = await handlers.feedback(body.task_id, body.quality, body.comment, scope, deps)
    except LookupError as exc:
        return JSONResponse(error_body(str(exc), "invalid_request_error", "not_found", "task_id"), 404)
    return JSONResponse({"task_id": str(body.task_id), "event_id": str(event_id), "status": "recorded"}, 202)
