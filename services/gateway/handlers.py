"""gateway's service layer: a chat completion from the decision to the recorded cost, feedback,
and the catalog and price book kept in step with cost-predictor's live catalog.

The gateway is a client of the bus like any application: it publishes TaskArrived (with the
scope of the caller's API key), waits for the task's ModelSelected or TaskRejected, calls the
chosen model's provider, walks the decision's fallback chain on retryable failures, and
publishes one CostRecorded per attempt through its outbox, in the transaction that records the
attempt. Plain functions of their dependencies; ``api.py`` is their HTTP face.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid5

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Tracer
from pydantic import BaseModel

from routewise.client.wire import msg_id_headers, parse_reply, request_errors
from routewise.contracts.budget import ReleaseBudget, Released, Reservation, ReserveBudget
from routewise.contracts.catalog import Catalog
from routewise.contracts.cost import ListPrices, PriceList
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.contracts.events import (
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.routing import ListPolicies, PolicyList
from routewise.pricing import PriceBook
from routewise.runtime import retention, tokens
from routewise.runtime.catalog import CatalogView, LiveCatalog, overrides_of
from routewise.runtime.service import Deps, Runtime
from routewise.services.gateway import authorization, cache
from routewise.services.gateway import repository as repo
from routewise.services.gateway.cache import Assembler
from routewise.services.gateway.decisions import Decisions
from routewise.services.gateway.domain import ROUTED_PREFIX, Usage, cost_of, worst_case
from routewise.services.gateway.meters import Meters
from routewise.services.gateway.providers import Failure, Provider, Registry, build_registry, classify, load_configs

log = structlog.get_logger(__name__)
Res = TypeVar("Res", bound=BaseModel)
TRACER = "routewise.gateway"
RELOAD_PRICES_EVERY_S = 30.0
PRUNE_CACHE_EVERY_S = 300.0
CONSUMED = ("routewise", "model", "stream", "stream_options", "metadata", "max_tokens", "max_completion_tokens")
"""Request fields the gateway reads or sets itself; every other one goes to the provider as sent."""


@dataclass(kw_only=True)
class GatewayDeps(Deps):
    catalog: Catalog
    """The live catalog (cost-predictor's publication, kept by ``watch_catalog``)."""
    book: PriceBook
    """Prices of the live catalog's revision, with the deployment's overrides."""
    registry: Registry
    decisions: Decisions
    nc: NatsClient
    tracer: Tracer
    meters: Meters
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    """Records of streams still being written after their client went away."""
    live_catalog: LiveCatalog | None = None

    async def aclose(self) -> None:
        """At shutdown (the runtime calls it, before the pool closes): the streams' records still
        being written finish, then the decisions' subscription and the providers' clients close."""
        if self.background:
            await asyncio.wait(set(self.background), timeout=10)
        await self.decisions.stop()
        await self.registry.close()


async def build(rt: Runtime) -> GatewayDeps:
    settings = rt.settings
    live = await LiveCatalog.open(rt.broker, settings)
    catalog = live.view.catalog
    registry = build_registry(
        load_configs(settings.providers_path, settings.provider_base_url, (m.provider for m in catalog.models)),
        settings.provider_timeout,
    )
    nc = rt.broker.connection
    decisions = Decisions(nc, rt.subjects, remember_s=settings.reservation_ttl)
    deps = GatewayDeps(
        **rt.base_deps(),
        catalog=catalog,
        book=live.view.price_book(),
        registry=registry,
        decisions=decisions,
        nc=nc,
        tracer=rt.tracer_provider.get_tracer(TRACER),
        meters=Meters(rt.registry),
        live_catalog=live,
    )
    live.on_change(functools.partial(use_catalog, deps))
    decisions.on_late = functools.partial(release_late, deps=deps)
    await decisions.start()
    await reload_prices(deps)
    return deps


async def ask(deps: GatewayDeps, subject: str, payload: BaseModel, reply_type: type[Res], timeout: float) -> Res:
    with request_errors(subject, timeout):
        msg = await deps.nc.request(subject, payload.model_dump_json().encode(), timeout=timeout)
    return parse_reply(msg.data, reply_type)


# --- the catalog and prices -----------------------------------------------------------------


def use_catalog(deps: GatewayDeps, view: CatalogView) -> None:
    """Serve this revision of the catalog from now on: its models (a registered one can be named
    at once), its prices (the published catalog carries the overrides, so a registered model's
    price comes with it), and a provider client for each provider it adds."""
    known = set(deps.registry.providers)
    added = {m.provider for m in view.catalog.models} - known
    if added:
        settings = deps.settings
        configs = load_configs(settings.providers_path, settings.provider_base_url, added)
        new = {name: config for name, config in configs.items() if name not in known}
        deps.registry = deps.registry.with_providers(build_registry(new, settings.provider_timeout))
    overrides = list(view.overrides) if view.revision else list(deps.book.overrides.values())
    deps.catalog, deps.book = view.catalog, PriceBook(view.catalog, overrides)


async def catalog_ids(deps: GatewayDeps, model: object) -> set[str]:
    """The catalog's model ids, for a request naming ``model``: one the catalog lacks makes the
    gateway read the published catalog first (registered a moment ago, before the watch delivered
    it; at most once a second), so it is served at once."""
    named = isinstance(model, str) and not model.startswith(ROUTED_PREFIX)
    if named and deps.catalog.get(str(model)) is None and deps.live_catalog is not None:
        await deps.live_catalog.refresh()
    return {m.id for m in deps.catalog.models}


def catalog_published(deps: GatewayDeps) -> bool:
    """cost-predictor has published a catalog: the price book follows it (``use_catalog``)."""
    return deps.live_catalog is not None and deps.live_catalog.view.revision > 0


async def reload_prices(deps: GatewayDeps) -> None:
    """Before cost-predictor has published a catalog (one of an older version, during an upgrade):
    the price book with its overrides, asked over the bus at start-up, when they change and every
    30 s (the last ones known are kept while it does not answer). Once it publishes, the book
    follows the published catalog, and the 30 s job ends. Either way the gateway prices each call
    locally: no request on the call's path, and a cost even while the bus is down."""
    if catalog_published(deps):
        return
    try:
        reply = await ask(deps, deps.subjects.cost_prices_list, ListPrices(), PriceList, 2.0)
    except RemoteError as exc:
        log.info("price overrides not refreshed: cost-predictor did not answer", code=exc.code)
        return
    deps.book = PriceBook(deps.catalog, overrides_of(reply.prices))


async def policies(deps: GatewayDeps) -> list[str]:
    """The routing policies' names (the selector's; none when it does not answer)."""
    try:
        reply = await ask(deps, deps.subjects.routing_policies_list, ListPolicies(), PolicyList, 2.0)
    except RemoteError:
        return []
    return [p.name for p in reply.policies]


# --- the decision ---------------------------------------------------------------------------


class GatewayError(Exception):
    """An answer the gateway gives itself (not the provider's): HTTP status, OpenAI error type and
    code, and what the client may need (reason, budget id, task id)."""

    def __init__(self, status: int, message: str, type_: str, code: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.extra = status, message, type_, code, extra


class Rejected(Exception):
    def __init__(self, rejection: TaskRejected) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


async def decide(task: TaskArrived, deps: GatewayDeps) -> ModelSelected:
    """Publish the task and wait for its decision (the process's one subscription hands it over);
    ``Rejected`` for a TaskRejected, ``GatewayError`` when the bus does not take it or no decision
    comes in time."""
    started = time.perf_counter()
    task_id = str(task.task_id)
    future = deps.decisions.expect(task_id)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    try:
        try:
            await deps.nc.jetstream().publish(
                deps.subjects.event(task),
                task.model_dump_json().encode(),
                headers=msg_id_headers(task, carrier),
                timeout=deps.settings.request_timeout,
            )
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise GatewayError(
                503,
                f"Routewise's bus did not take the task: {type(exc).__name__}",
                "service_unavailable",
                "unavailable",
            ) from exc
        wait = deps.settings.gateway_decision_timeout
        try:
            decision = await asyncio.wait_for(future, wait)
        except TimeoutError:
            deps.decisions.abandon(task_id)  # a decision still to come must not hold budget for nobody
            raise GatewayError(
                504, f"no routing decision within {wait:g} s", "timeout", "decision_timeout", task_id=task_id
            ) from None
    finally:
        deps.decisions.forget(task_id)
        deps.meters.decision_latency.observe(time.perf_counter() - started)
    if isinstance(decision, TaskRejected):
        raise Rejected(decision)
    return decision


async def release_late(selected: ModelSelected, deps: GatewayDeps) -> None:
    """A task was decided after its request gave up (504): give its hold back, as nobody runs it."""
    if selected.reservation_id is None:
        return
    release = ReleaseBudget(
        task_id=selected.task_id, reservation_id=selected.reservation_id, reason="gateway: the request timed out"
    )
    try:
        released = await ask(deps, deps.subjects.budget_release, release, Released, deps.settings.request_timeout)
    except RemoteError as exc:
        log.warning("a late decision's hold not released; it expires", task_id=str(selected.task_id), code=exc.code)
        return
    log.info("a late decision's hold released", task_id=str(selected.task_id), released=released.released)


# --- provider attempts ----------------------------------------------------------------------


def provider_request(body: Mapping[str, Any], decision: ModelSelected) -> tuple[dict[str, Any], str, int | None]:
    """What goes to the provider besides model and messages: the client's parameters, and the
    output cap (the client's ``max_tokens``/``max_completion_tokens``, at most the decision's)."""
    extra = {k: v for k, v in body.items() if k not in CONSUMED and k != "messages"}
    cap_key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = body.get(cap_key)
    cap = decision.max_output_tokens
    if isinstance(asked, int) and asked > 0:
        cap = min(asked, cap) if cap else asked
    return extra, cap_key, cap


@dataclass
class Call:
    """One attempt in flight: the model, its provider, what was sent and when."""

    task: TaskArrived
    decision: ModelSelected
    number: int
    model: str
    provider: Provider | None
    provider_name: str
    stream: bool
    span: Span
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    @property
    def provider_model(self) -> str:
        return self.provider.model_name(self.model) if self.provider else self.model

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def ttft_ms(self) -> float | None:
        return (self.first_token_at - self.started) * 1000 if self.first_token_at is not None else None


def start_call(
    deps: GatewayDeps, task: TaskArrived, decision: ModelSelected, number: int, model: str, *, stream: bool
) -> Call:
    entry = deps.catalog.get(model)
    provider_name = entry.provider if entry else (decision.provider if model == decision.model else "unknown")
    provider = deps.registry.get(provider_name)
    call = Call(task, decision, number, model, provider, provider_name, stream, span=trace.INVALID_SPAN)
    span = deps.tracer.start_span(f"chat {call.provider_model}", kind=SpanKind.CLIENT)
    span.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider_name,
            "gen_ai.request.model": call.provider_model,
            "routewise.task_id": str(task.task_id),
            "routewise.attempt": number,
            "routewise.model": model,
        }
    )
    call.span = span
    return call


async def send(deps: GatewayDeps, call: Call, body: Mapping[str, Any]) -> Any:
    """The provider's answer (a ChatCompletion, or the stream of chunks); raises what it raised."""
    if call.provider is None:
        raise LookupError(f"no provider {call.provider_name!r} is configured (ROUTEWISE_PROVIDERS_PATH)")
    extra, cap_key, cap = provider_request(body, call.decision)
    if cap is not None:
        extra[cap_key] = cap
    if call.stream:
        extra["stream_options"] = {"include_usage": True}
    return await call.provider.client.chat.completions.create(
        model=call.provider_model,
        messages=body["messages"],
        stream=call.stream,
        extra_body=extra,
    )


def failure_of(exc: Exception) -> Failure:
    if isinstance(exc, LookupError):
        return Failure("no_provider", True, str(exc))
    return classify(exc)


@dataclass(frozen=True)
class Record:
    """What one attempt leaves: its row, and the cost it is charged."""

    attempt: repo.Attempt
    cost: CostRecorded | None


def record_of(deps: GatewayDeps, call: Call, *, usage: Usage | None, source: str, failure: Failure | None) -> Record:
    """The attempt's row and its CostRecorded. A successful call is charged its usage at the price
    book's price; a failed one what the provider reported with its error (nothing reported: $0),
    so its failure still reaches performance-tracker's error rate."""
    cost = Decimal(0)
    if usage is not None:
        try:
            cost = cost_of(deps.book, call.model, usage)
        except RoutewiseError as exc:
            log.error("an answered call has no price; its cost is not recorded", model=call.model, error=exc.message)
            usage = None
    task = call.task
    event = CostRecorded(
        event_id=uuid5(task.task_id, f"gateway-attempt-{call.number}"),
        task_id=task.task_id,
        scope=task.scope,
        task_type=task.task_type,
        model=call.model,
        provider=call.provider_name,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        cost_usd=cost,
        latency_ms=round(call.elapsed_ms(), 3),
        success=failure is None,
        error_type=failure.error_type if failure else None,
        attempt=call.number,
    )
    attempt = repo.Attempt(
        task_id=task.task_id,
        attempt=call.number,
        model=call.model,
        provider=call.provider_name,
        provider_model=call.provider_model,
        ok=failure is None,
        scope=task.scope,
        task_type=task.task_type,
        latency_ms=call.elapsed_ms(),
        stream=call.stream,
        ttft_ms=call.ttft_ms(),
        http_status=failure.status if failure else 200,
        error_type=failure.error_type if failure else None,
        error_detail=failure.detail if failure else None,
        retryable=failure.retryable if failure else False,
        input_tokens=usage.input_tokens if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        cached_input_tokens=usage.cached_input_tokens if usage else None,
        usage_source=source if usage else None,
        cost_usd=cost,
        cost_event_id=event.event_id,
    )
    return Record(attempt, event)


async def finish(deps: GatewayDeps, call: Call, record: Record) -> None:
    """Write the attempt and put its cost in the outbox, in one transaction (inside the attempt's
    span, so the cost belongs to the task's trace), then close the span and count it."""
    a = record.attempt
    span = call.span
    with trace.use_span(span, end_on_exit=True):
        if a.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", a.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", a.output_tokens or 0)
        span.set_attribute("gen_ai.response.model", call.provider_model)
        span.set_attribute("routewise.cost_usd", str(a.cost_usd))
        if a.error_type:
            span.set_attribute("error.type", a.error_type)
            span.set_status(trace.StatusCode.ERROR, a.error_detail or a.error_type)
        async with deps.transaction() as uow:
            await repo.record_attempt(uow.conn, a)
            if record.cost is not None:
                await uow.publish(deps.subjects.event(record.cost), record.cost)
    deps.meters.attempt(call.provider_name, a.error_type, a.latency_ms / 1000)


REFUSALS = {
    "budget_exhausted": RejectionReason.budget_exhausted,
    "approval_required": RejectionReason.approval_required,
    "over_request_cap": RejectionReason.over_request_cap,
    "model_restricted": RejectionReason.no_model_within_constraints,
}


async def hold_for(deps: GatewayDeps, body: Mapping[str, Any], call: Call) -> None:
    """A fallback attempt (2, 3, …) holds for itself before it is called, as the decision held for
    the first: the call's worst case (every input token at full price, the output cap at the output
    price) on every budget of the scope. A refusal answers the request as a rejection would (402,
    403, …); a budget-enforcer that does not answer, 503. Without an output cap there is no worst
    case: the attempt runs without a hold of its own (the bus path's behaviour)."""
    _, _, cap = provider_request(body, call.decision)
    if cap is None:
        return
    try:
        with trace.use_span(call.span, end_on_exit=False):
            await _reserve(deps, call, cap)
    except BaseException as exc:  # not called: the attempt's span ends here
        call.span.set_status(trace.StatusCode.ERROR, str(exc) or type(exc).__name__)
        call.span.end()
        raise


async def _reserve(deps: GatewayDeps, call: Call, cap: int) -> None:
    task, encoding = call.task, tokens.encoding_for_model(call.provider_name, call.provider_model)[0]
    amount = worst_case(deps.book, call.model, tokens.count_tokens(None, task.messages, encoding), cap)
    entry = deps.catalog.get(call.model)
    hold = ReserveBudget(
        task_id=task.task_id,
        scope=task.scope,
        amount_usd=amount,
        model=call.model,
        tier=entry.tier if entry else None,
        attempt=call.number,
    )
    try:
        reservation = await ask(deps, deps.subjects.budget_reserve, hold, Reservation, deps.settings.request_timeout)
    except RemoteError as exc:
        raise GatewayError(
            503,
            f"budget-enforcer did not hold for the fallback call: {exc.message}",
            "service_unavailable",
            "unavailable",
            task_id=str(task.task_id),
        ) from exc
    if not reservation.admitted:
        reason = REFUSALS.get(str(reservation.reason), RejectionReason.budget_exhausted)
        detail = f"the fallback to {call.model} was refused: {reservation.detail}"
        raise Rejected(
            TaskRejected(
                task_id=task.task_id,
                scope=task.scope,
                task_type=task.task_type,
                reason=reason,
                detail=detail[:20_000],
                budget_id=reservation.budget_id,
            )
        )


# --- non-streaming --------------------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    decision: ModelSelected
    model: str
    body: dict[str, Any]
    spent: Decimal
    attempts: int
    provider_ms: float


@dataclass(frozen=True)
class ProviderRefused(Exception):
    """A non-retryable answer of the provider (a 400...): the client gets it as the provider said."""

    status: int
    body: Any
    decision: ModelSelected
    model: str
    spent: Decimal
    attempts: int


def chain_of(decision: ModelSelected) -> list[str]:
    return list(dict.fromkeys([decision.model, *decision.fallback_chain]))


async def failed(deps: GatewayDeps, call: Call, exc: Exception) -> tuple[Failure, Record]:
    """A failed attempt recorded (its row, and its cost from whatever usage the provider reported
    with the error, through the outbox): what failed, and the record."""
    failure = failure_of(exc)
    record = record_of(deps, call, usage=Usage.reported(failure.usage), source="provider", failure=failure)
    await finish(deps, call, record)
    return failure, record


async def complete(
    body: Mapping[str, Any], task: TaskArrived, deps: GatewayDeps, cache_key: bytes | None = None
) -> Completed:
    """The task decided, then its models tried in the decision's order until one answers (stored in
    the response cache under ``cache_key`` when there is one)."""
    decision = await decide(task, deps)
    spent, provider_ms, last = Decimal(0), 0.0, None
    for number, model in enumerate(chain_of(decision), 1):
        call = start_call(deps, task, decision, number, model, stream=False)
        if number > 1:
            await hold_for(deps, body, call)
        try:
            with trace.use_span(call.span, end_on_exit=False):
                response = await send(deps, call, body)
        except Exception as exc:
            failure, record = await failed(deps, call, exc)
            spent += record.attempt.cost_usd
            provider_ms += record.attempt.latency_ms
            if not failure.retryable:
                raise ProviderRefused(failure.status or 502, failure.body, decision, model, spent, number) from exc
            last = failure
            continue
        answer = response.to_dict(mode="json")
        usage = Usage.reported(answer.get("usage"))
        source = "provider"
        if usage is None:
            usage, source = counted_usage(call, _answer_text(answer)), "tokenizer"
        record = record_of(deps, call, usage=usage, source=source, failure=None)
        await finish(deps, call, record)
        answer["model"] = model
        if cache_key is not None:
            await remember(deps, cache_key, answer, record)
        return Completed(
            decision, model, answer, spent + record.attempt.cost_usd, number, provider_ms + record.attempt.latency_ms
        )
    raise GatewayError(
        502,
        f"every model of the decision failed; the last: {last.error_type if last else 'none'}"
        f" ({last.detail if last else ''})",
        "api_error",
        "all_models_failed",
        task_id=str(task.task_id),
        spent_usd=str(spent),
    )


def _answer_text(answer: Mapping[str, Any]) -> str:
    texts = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
    return "".join(texts)


def counted_usage(call: Call, output_text: str) -> Usage:
    """Usage when the provider reported none: the conversation and the answer's text counted with
    the project's tokenizer (``routewise.runtime.tokens``, the cost predictor's rule)."""
    name, _ = tokens.encoding_for_model(call.provider_name, call.provider_model)
    return Usage(tokens.count_tokens(None, call.task.messages, name), tokens.count_text(output_text, name))


# --- streaming ------------------------------------------------------------------------------


@dataclass
class Streaming:
    """A stream whose first chunk has arrived: the decision, the model answering, the chunks
    (the first one included) as the provider sends them."""

    decision: ModelSelected
    model: str
    attempts: int
    spent_before: Decimal
    chunks: AsyncIterator[dict[str, Any]]
    wants_usage: bool


async def open_stream(
    body: Mapping[str, Any], task: TaskArrived, deps: GatewayDeps, cache_key: bytes | None = None
) -> Streaming:
    """The task decided and its models tried until one starts streaming (a failure before the
    first chunk moves on to the next model; after it, the stream ends with an error). A stream that
    ends complete is stored in the response cache under ``cache_key`` when there is one."""
    decision = await decide(task, deps)
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    spent, last = Decimal(0), None
    for number, model in enumerate(chain_of(decision), 1):
        call = start_call(deps, task, decision, number, model, stream=True)
        if number > 1:
            await hold_for(deps, body, call)
        try:
            with trace.use_span(call.span, end_on_exit=False):
                stream = await send(deps, call, body)
                chunks = aiter(stream)
                first = await anext(chunks)
        except Exception as exc:
            failure, record = await failed(deps, call, exc)
            spent += record.attempt.cost_usd
            if not failure.retryable:
                raise ProviderRefused(failure.status or 502, failure.body, decision, model, spent, number) from exc
            last = failure
            continue
        call.first_token_at = time.perf_counter()
        relayed = relay(deps, call, stream, chunks, first, cache_key)
        return Streaming(decision, model, number, spent, relayed, wants_usage)
    raise GatewayError(
        502,
        f"every model of the decision failed; the last: {last.error_type if last else 'none'}",
        "api_error",
        "all_models_failed",
        task_id=str(task.task_id),
        spent_usd=str(spent),
    )


async def relay(
    deps: GatewayDeps,
    call: Call,
    stream: AsyncStream[ChatCompletionChunk],
    chunks: AsyncIterator[ChatCompletionChunk],
    first: ChatCompletionChunk,
    cache_key: bytes | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The provider's chunks (``model`` the catalog id), and the attempt recorded when the stream
    ends, fails or its client goes away: priced from the final usage chunk, or counted with the
    tokenizer when there was none (the recording is not cancelled with the client's request).
    With a ``cache_key``, a stream relayed to its end is assembled and stored as a plain answer."""
    usage: Usage | None = None
    text: list[str] = []
    failure: Failure | None = None
    assembler = Assembler() if cache_key is not None else None
    ended = False
    try:
        chunk: ChatCompletionChunk | None = first
        while chunk is not None:
            data: dict[str, Any] = dict(chunk.to_dict(mode="json"))
            usage = Usage.reported(data.get("usage")) or usage
            for choice in data.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    text.append(content)
            data["model"] = call.model
            if assembler is not None:
                assembler.add(data)
            yield data
            chunk = await anext(chunks, None)
        ended = True
    except Exception as exc:
        failure = failure_of(exc)
        raise
    finally:
        source = "provider"
        if usage is None:
            usage, source = counted_usage(call, "".join(text)), "tokenizer"
        record = record_of(deps, call, usage=usage, source=source, failure=failure)
        answer = assembler.answer() if assembler is not None and ended and failure is None else None
        stored = (cache_key, answer) if cache_key is not None and answer is not None else None
        # its own task: a client gone away cancels this generator, never the provider's close or the record
        settling = asyncio.create_task(
            settle(deps, call, record, stream, stored), name=f"gateway-record-{call.task.task_id}"
        )
        deps.background.add(settling)
        settling.add_done_callback(deps.background.discard)
        await asyncio.shield(settling)


async def settle(
    deps: GatewayDeps,
    call: Call,
    record: Record,
    stream: AsyncStream[ChatCompletionChunk],
    stored: tuple[bytes, dict[str, Any]] | None = None,
) -> None:
    """A stream's end: the provider's response closed (a client gone away stops the call), then the
    attempt and its cost recorded, then its assembled answer cached (``stored``: key and answer)."""
    try:
        await stream.close()
    finally:
        await finish(deps, call, record)
    if stored is not None:
        await remember(deps, stored[0], stored[1], record)


# --- the response cache ---------------------------------------------------------------------


async def remember(deps: GatewayDeps, key: bytes, answer: dict[str, Any], record: Record) -> None:
    """Store a successful answer under its key for ``gateway_cache_ttl`` seconds: the answer, the
    model that gave it, its usage and cost. An answer over ``gateway_cache_max_bytes`` is not stored;
    a failure to store is logged (the client has its answer)."""
    a = record.attempt
    if not a.ok or a.input_tokens is None or cache.encoded_size(answer) > deps.settings.gateway_cache_max_bytes:
        return
    entry = repo.CachedAnswer(
        org_id=a.scope.org_id,
        key=key,
        answer=answer,
        model=a.model,
        provider=a.provider,
        input_tokens=a.input_tokens,
        output_tokens=a.output_tokens or 0,
        cached_input_tokens=a.cached_input_tokens or 0,
        cost_usd=a.cost_usd,
        source_task_id=a.task_id,
    )
    try:
        await repo.store_answer(deps.pool, entry, deps.clock(), deps.settings.gateway_cache_ttl)
    except Exception:
        log.exception("an answer was not cached", task_id=str(a.task_id))


async def cached(deps: GatewayDeps, org_id: str, key: bytes) -> repo.CachedAnswer | None:
    """The org's unexpired answer under ``key``, if any."""
    async with deps.pool.acquire() as conn:
        return await repo.cached_answer(conn, org_id, key, deps.clock())


async def record_hit(
    deps: GatewayDeps, task: TaskArrived, entry: repo.CachedAnswer, *, stream: bool, ms: float
) -> None:
    """A task answered from the cache: its row, the entry's hit count, and its CostRecorded (cached:
    $0, no tokens, the stored answer's cost avoided) through the outbox, in one transaction. No
    decision and no budget hold: nothing is spent."""
    event = CostRecorded(
        event_id=uuid5(task.task_id, "gateway-cache-hit"),
        task_id=task.task_id,
        scope=task.scope,
        task_type=task.task_type,
        model=entry.model,
        provider=entry.provider,
        input_tokens=0,
        output_tokens=0,
        cost_usd=Decimal(0),
        latency_ms=round(ms, 3),
        cached=True,
        avoided_cost_usd=entry.cost_usd,
    )
    hit = repo.CacheHit(task.task_id, task.scope, task.task_type, entry, stream)
    with deps.tracer.start_as_current_span("cache hit") as span:
        span.set_attributes(
            {
                "routewise.task_id": str(task.task_id),
                "routewise.model": entry.model,
                "routewise.cache.source_task_id": str(entry.source_task_id),
                "routewise.cache.avoided_cost_usd": str(entry.cost_usd),
            }
        )
        async with deps.transaction() as uow:
            await repo.record_hit(uow.conn, hit, deps.clock())
            await uow.publish(deps.subjects.event(event), event)


async def prune_cache(deps: GatewayDeps) -> None:
    """Expired answers deleted (they are never served; this keeps the table to the live ones)."""
    pruned = await retention.prune_older(deps.pool, "response_cache", "expires_at", deps.clock())
    if pruned:
        log.info("expired cached answers pruned", pruned=pruned)


# --- feedback -------------------------------------------------------------------------------


async def feedback(task_id: UUID, quality: float, comment: str | None, scope: Scope, deps: GatewayDeps) -> UUID:
    """FeedbackRecorded for a task this gateway answered, within the caller's org (the model is
    the one that answered); LookupError otherwise."""
    async with deps.pool.acquire() as conn:
        attempts = await repo.attempts_of(conn, task_id)
        answered = next(((a.scope, a.model, a.task_type) for a in attempts if a.ok), None)
        if answered is None:
            answered = await repo.hit_of(conn, task_id)  # answered from the cache
    if answered is None or not authorization.holds_task(scope, answered[0]):
        raise LookupError(f"no task {task_id} answered through this gateway within {authorization.text(scope)}")
    event = FeedbackRecorded(
        event_id=uuid5(task_id, f"gateway-feedback-{quality}-{comment or ''}"),
        task_id=task_id,
        scope=answered[0],
        model=answered[1],
        quality=quality,
        task_type=answered[2],
        comment=comment,
    )
    async with deps.transaction() as uow:
        await uow.publish(deps.subjects.event(event), event)
    return event.event_id
