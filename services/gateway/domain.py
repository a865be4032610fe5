"""The gateway's rules, free of I/O: what an OpenAI request asks Routewise for (model, knobs,
messages), what a rejection answers over HTTP, and what a call cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routewise.contracts.events import (
    MAX_PROMPT_CHARS,
    ChatMessage,
    Constraints,
    PolicyName,
    ProviderName,
    RejectionReason,
    Scope,
    Strategy,
    TaskArrived,
    TaskType,
    Usd,
)
from routewise.pricing import PriceBook

ROUTED_PREFIX = "routewise/"
AUTO = "routewise/auto"


class Knobs(BaseModel):
    """Routewise's own request options: in the body as ``routewise: {...}`` (the OpenAI SDK's
    ``extra_body``), as ``metadata`` entries ``routewise_<name>``, or as ``X-Routewise-<Name>``
    headers (``X-Routewise-Quality-Bias: 0.8``); a header wins over the body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: TaskType | None = None
    quality_bias: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: Usd | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    allowed_providers: list[ProviderName] | None = Field(default=None, max_length=50)
    strategy: Strategy | None = None
    cache: bool | None = Field(
        default=None, description="use the response cache (true), or not (false); default: the org's configuration"
    )


KNOBS = tuple(Knobs.model_fields)
HEADER_PREFIX = "x-routewise-"
CACHE_WORDS = {"use": True, "yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}
"""``X-Routewise-Cache: use`` (or ``no``): what a request says of the response cache."""


class BadRequest(ValueError):
    """The client's request cannot be served as sent (400), with the parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def knobs_from(body: Mapping[str, Any], headers: Mapping[str, str]) -> Knobs:
    raw: dict[str, Any] = {}
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for name in KNOBS:
            if f"routewise_{name}" in metadata:
                raw[name] = metadata[f"routewise_{name}"]
    own = body.get("routewise")
    if own is not None and not isinstance(own, dict):
        raise BadRequest("routewise must be an object of Routewise options", "routewise")
    raw.update(own or {})
    for name in KNOBS:
        value = headers.get(HEADER_PREFIX + name.replace("_", "-"))
        if value is not None:
            raw[name] = value
    if isinstance(raw.get("cache"), str):
        raw["cache"] = CACHE_WORDS.get(raw["cache"].strip().lower(), raw["cache"])
    if isinstance(raw.get("allowed_providers"), str):
        raw["allowed_providers"] = [p.strip() for p in raw["allowed_providers"].split(",") if p.strip()]
    try:
        return Knobs.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"Routewise option {where}: {first['msg']}", f"routewise.{where}") from None


@dataclass(frozen=True)
class Target:
    """What ``model`` asks for: a policy's routing (None: the task type's) or one model, forced."""

    policy: str | None = None
    forced: str | None = None


def target_of(model: Any, catalog_ids: set[str]) -> Target:
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required: routewise/auto, routewise/<policy> or a catalog model id", "model")
    if model == AUTO:
        return Target()
    if model.startswith(ROUTED_PREFIX):
        policy = model.removeprefix(ROUTED_PREFIX)
        try:
            PolicyModel.model_validate({"policy": policy})
        except ValidationError:
            raise BadRequest(f"no such routing policy name: {policy!r}", "model") from None
        return Target(policy=policy)
    if model in catalog_ids:
        return Target(forced=model)
    raise BadRequest(
        f"unknown model {model!r}: use routewise/auto, routewise/<policy> or one of GET /v1/models", "model"
    )


class PolicyModel(BaseModel):
    policy: PolicyName


ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    raise BadRequest("a message's content is a string or a list of content parts", "messages")


def messages_of(body: Mapping[str, Any]) -> list[ChatMessage]:
    """The conversation as Routewise's task carries it (text only; images and tools stay in the
    provider's request as sent)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    out = []
    total = 0
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest("each message needs a role: system, developer, user, assistant or tool", "messages")
        text = _text(message.get("content"))
        total += len(text)
        if total > MAX_PROMPT_CHARS:
            raise BadRequest(f"the conversation is longer than {MAX_PROMPT_CHARS} characters", "messages")
        out.append(ChatMessage(role=ROLES[message["role"]], content=text))
    if not any(m.content.strip() for m in out):
        raise BadRequest("the messages carry no text", "messages")
    return out


DEFAULT_OUTPUT_CAP = 4096
"""The output cap of a request that gives none: every call through the gateway has one, so its
hold covers its worst case and a hard budget holds for real spend (a policy's own cap, when lower,
wins)."""


def output_cap(body: Mapping[str, Any]) -> int:
    """The request's output cap (``max_completion_tokens``, else ``max_tokens``, else the default)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_OUTPUT_CAP


def task_for(body: Mapping[str, Any], knobs: Knobs, target: Target, scope: Scope) -> TaskArrived:
    """The request as a task. Its output cap travels as ``constraints.max_output_tokens``, so the
    decision holds the call's worst case (every input token at full price, that many output tokens)."""
    constraints = Constraints(
        max_cost_usd=knobs.max_cost_usd,
        min_quality=knobs.min_quality,
        allowed_providers=knobs.allowed_providers,
        allowed_models=[target.forced] if target.forced else None,
        max_output_tokens=output_cap(body),
    )
    return TaskArrived(
        scope=scope,
        task_type=knobs.task_type or "normal",
        messages=messages_of(body),
        policy=target.policy,
        constraints=constraints,
        strategy=knobs.strategy,
        quality_bias=knobs.quality_bias,
    )


# --- rejections -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpError:
    status: int
    type: str
    code: str


REJECTIONS: dict[RejectionReason, HttpError] = {
    RejectionReason.budget_exhausted: HttpError(402, "insufficient_quota", "budget_exhausted"),
    RejectionReason.approval_required: HttpError(403, "permission_denied", "approval_required"),
    RejectionReason.over_request_cap: HttpError(422, "invalid_request_error", "over_request_cap"),
    RejectionReason.no_model_within_constraints: HttpError(422, "invalid_request_error", "no_model_within_constraints"),
    RejectionReason.invalid_request: HttpError(400, "invalid_request_error", "invalid_request"),
    RejectionReason.unavailable: HttpError(503, "service_unavailable", "unavailable"),
}


def rejection_message(reason: RejectionReason, detail: str, task_id: str) -> str:
    if reason is RejectionReason.approval_required:
        return f"{detail} — approve this task with `routewise budgets approve {task_id}`, then send the request again"
    return detail


# --- cost -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0

    @classmethod
    def reported(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        """The provider's usage object (OpenAI shape), or None when it reported none."""
        if not isinstance(usage, Mapping):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
        cached = cached if isinstance(cached, int) and 0 <= cached <= prompt else 0
        return cls(max(prompt, 0), max(completion, 0), cached)


def worst_case(book: PriceBook, model: str, input_tokens: int, max_output_tokens: int) -> Decimal:
    """What a call can cost at most: every input token at the full input price (no cache discount)
    and ``max_output_tokens`` at the output price — the hold a fallback attempt takes first."""
    return cost_of(book, model, Usage(input_tokens, max_output_tokens))


def cost_of(book: PriceBook, model: str, usage: Usage) -> Decimal:
    """The call's cost at the price book's price: input (cached input at its cache price), output."""
    priced = book.resolve(model)
    input_cost, output_cost = priced.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
    return input_cost + output_cost
