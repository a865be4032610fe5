"""Event contracts: what travels on the bus.

Every event is a frozen pydantic model with ``event_id`` (also sent as ``Nats-Msg-Id`` so
JetStream drops duplicates), ``occurred_at`` (UTC) and ``schema_version``. Money is
``Decimal`` USD, serialised as a JSON string. Unknown fields are rejected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from routewise.contracts.vocabulary import HealthState, ScopeType


def fixed_point(amount: Decimal) -> str:
    """Money for JSON: plain notation, no trailing zeros ("2.5", "100", "0.000123")."""
    return format(amount.normalize(), "f") if amount else "0"


Usd = Annotated[
    Decimal,
    Field(ge=0, max_digits=30, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""A non-negative amount of US dollars; a fixed-point string in JSON ("0.000123", never "1.23E-4").
Up to 10^18 with 12 places, as every money column (numeric(30, 12)): sums fit too."""

MAX_CALL_COST_USD = Decimal(10_000)
"""The most one LLM call may cost: far above any real call, far below what sums could overflow."""
CallUsd = Annotated[Usd, Field(le=MAX_CALL_COST_USD)]
SignedCallUsd = Annotated[
    Decimal,
    Field(ge=-MAX_CALL_COST_USD, le=MAX_CALL_COST_USD, max_digits=30, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""A change of one call's cost, either way (a correction down is negative)."""

MAX_ATTEMPTS = 20
"""The most calls one task may make (its model, then fallbacks), each with a hold of its own."""

Percent = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=4, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]

_ID = r"[A-Za-z0-9][A-Za-z0-9_.:@-]*"
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=rf"^{_ID}$")]
"""An org/team/user/workspace id as applications give it (no ``/``, no spaces; bounded)."""

ScopeId = Annotated[str, Field(min_length=1, max_length=257, pattern=rf"^{_ID}(/{_ID})?$")]
"""A scope's identity: the org's id, or ``org/id`` for a team, user or workspace. Their ids are
unique within their org only: team ``platform`` of ``acme`` is ``acme/platform``."""


def scope_parts(scope_type: str, scope_id: str) -> tuple[str, str | None]:
    """(org, id within the org) of a scope; ValueError when the path does not fit its type."""
    org, _, local = scope_id.partition("/")
    if scope_type == "org" and local:
        raise ValueError(f"an org's id has no '/': {scope_id!r}")
    if scope_type != "org" and not local:
        raise ValueError(f"a {scope_type} is named within its org, as ORG/ID (e.g. acme/{scope_id}): {scope_id!r}")
    return org, local or None


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first instant a datetime holds
        raise ValueError("the timestamp is out of range in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every message model: immutable, strict about unknown fields, no NUL in any text
    (Postgres cannot store it: one service would fail on what the others apply)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("text may not contain NUL (\\u0000)")
        return value


class Event(Contract):
    CURRENT_VERSION: ClassVar[int] = 1
    SUBJECT: ClassVar[str]
    """The ``Subjects`` field the event travels on (``Subjects.of``)."""

    event_id: UUID = Field(
        default_factory=uuid4,
        description="Applied once per id. On the wire: in the payload, else the message's Nats-Msg-Id header;"
        " an event with neither is dead-lettered (a random id would make every redelivery new).",
    )
    occurred_at: UtcDatetime = Field(default_factory=utcnow)
    schema_version: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _known_version(self) -> Event:
        if self.schema_version > self.CURRENT_VERSION:
            raise ValueError(
                f"{type(self).__name__} schema_version {self.schema_version} is newer than "
                f"this consumer understands ({self.CURRENT_VERSION})"
            )
        return self


class Scope(Contract):
    """Who pays. Spend on a user also counts on its team and org."""

    org_id: Identifier
    team_id: Identifier | None = None
    user_id: Identifier | None = None
    workspace_id: Identifier | None = None

    def chain(self) -> list[tuple[str, str]]:
        """(scope_type, scope id) from the narrowest to the org; ids below the org are
        org-qualified (``acme/platform``): another org's team of the same name is another scope."""
        org = self.org_id
        out: list[tuple[str, str]] = []
        if self.user_id:
            out.append(("user", f"{org}/{self.user_id}"))
        if self.workspace_id:
            out.append(("workspace", f"{org}/{self.workspace_id}"))
        if self.team_id:
            out.append(("team", f"{org}/{self.team_id}"))
        out.append(("org", org))
        return out

    @property
    def org_wide(self) -> bool:
        """The whole org: no team, user or workspace named."""
        return self.team_id is None and self.user_id is None and self.workspace_id is None

    def contains(self, other: Scope) -> bool:
        """Whether ``other`` is this scope or within it: every id this scope names is the same in
        ``other`` (an org holds its teams, users and workspaces; a team the users charged to it).
        The one containment rule: a key's scope and the tasks it finds by id, an adjustment's scope
        and the costs it may correct."""
        return self.org_id == other.org_id and all(
            mine is None or mine == theirs
            for mine, theirs in (
                (self.team_id, other.team_id),
                (self.user_id, other.user_id),
                (self.workspace_id, other.workspace_id),
            )
        )

    def holds(self, scope_type: str, scope_id: str) -> bool:
        """Whether what is kept on one scope (a budget, its alerts, a report: ``team``,
        ``acme/platform``) is within this one: an org-wide scope holds every scope of its org; a
        narrower one holds its narrowest level alone — a team's its team (not the org above it, and
        not a user's budget, which names no team), a user's its user. Which budgets a key reads and
        changes, and which approval gates an approval lifts."""
        try:
            org, _ = scope_parts(scope_type, scope_id)
        except ValueError:
            return False
        return org == self.org_id and (self.org_wide or (scope_type, scope_id) == self.chain()[0])


def _workspace_path(value: str) -> str:
    scope_parts("workspace", value)
    return value


WorkspacePath = Annotated[ScopeId, AfterValidator(_workspace_path)]
"""A workspace named within its org: ``acme/research``."""


class ScopedContract(Contract):
    """A contract naming one scope by ``scope_type`` and ``scope_id`` (both, or neither when
    optional): the id must be the org-qualified path its type needs."""

    @model_validator(mode="after")
    def _qualified(self) -> Any:
        scope_type, scope_id = getattr(self, "scope_type", None), getattr(self, "scope_id", None)
        if (scope_type is None) != (scope_id is None):
            raise ValueError("give scope_type and scope_id together")
        if scope_type is not None and scope_id is not None:
            scope_parts(scope_type, scope_id)
        return self


class Tier(StrEnum):
    micro = "micro"
    standard = "standard"
    versatile = "versatile"
    heavy = "heavy"
    complex = "complex"

    @property
    def rank(self) -> int:
        return _TIER_RANKS[self]


_TIER_RANKS = {tier: i for i, tier in enumerate(Tier)}


MAX_PROMPT_CHARS = 900_000
"""A task travels as one NATS message; NATS's default max_payload is 1 MiB."""

ModelName = Annotated[str, Field(min_length=1, max_length=200)]
"""A model's id as applications and providers spell it (``provider/model`` included)."""
ProviderName = Annotated[str, Field(min_length=1, max_length=64)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
"""A short machine-readable word: an error type, a pattern, a policy, a budget's name, an action."""
Text = Annotated[str, Field(max_length=20_000)]
"""A sentence for people: a detail, a reasoning, a reason."""


class ChatMessage(Contract):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class Constraints(Contract):
    max_cost_usd: Usd | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    allowed_providers: list[ProviderName] | None = Field(default=None, max_length=50)
    latency_slo_ms: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    """The most output tokens the call will be let produce (the caller passes the decision's
    ``max_output_tokens`` to the provider as ``max_tokens``). Given, the hold covers the call's worst
    case — its input tokens plus this many output tokens, no cache discount — so what the call
    really costs cannot take spend past a hard limit (the gateway gives it)."""
    allowed_models: list[ModelName] | None = Field(default=None, min_length=1, max_length=50)
    """Only these models are candidates, in this order, whatever the policy lists (its caps still
    apply): how the gateway runs a model the caller named, still budget-checked and recorded."""


Strategy = Literal["complexity", "learning", "hybrid"]

TaskType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
PolicyName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class TaskArrived(Event):
    """An application asks Routewise to choose a model for a task."""

    SUBJECT: ClassVar[str] = "task_arrived"

    task_id: UUID = Field(default_factory=uuid4)
    scope: Scope
    task_type: TaskType = "normal"
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=10_000)
    policy: PolicyName | None = None
    """The routing policy to use; default: the task type's (see the task-type map), else ``normal``."""
    constraints: Constraints = Field(default_factory=Constraints)
    auto_route: bool = False
    """Let the learner route (the hybrid strategy); otherwise the complexity strategy decides."""
    strategy: Strategy | None = None
    """Force a strategy, whatever ``auto_route`` says."""
    quality_bias: float | None = Field(default=None, ge=0, le=1)
    """The quality/cost knob: 0 = the cheapest model predicted good enough, 1 = the best predicted
    quality whatever it costs. Default: the workspace's preference, else 0.5."""

    @model_validator(mode="after")
    def _has_input(self) -> TaskArrived:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt is empty")
        if self.messages is not None and not any(m.content.strip() for m in self.messages):
            raise ValueError("messages carry no text")
        return self

    def text(self) -> str:
        """The task's text, messages joined in order."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(m.content for m in self.messages or [])


HIGH_CONFIDENCE = 0.7
"""A decision's confidence from which it counts as high: the selector's hybrid strategy trusts a
learned choice (validating it against complexity's) from here on, and the metrics report's
"high" bucket starts here."""


class CandidateScore(Contract):
    model: ModelName
    provider: ProviderName
    tier: Tier
    predicted_quality: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)
    """How much observed evidence (rather than the prior) stands behind ``predicted_quality``."""
    estimated_cost_usd: CallUsd
    output_tokens_p50: int | None = Field(default=None, ge=0, le=100_000_000)
    output_tokens_p90: int | None = Field(default=None, ge=0, le=100_000_000)
    """The output tokens the estimate assumed (p50 for the cost, p90 for the hold)."""


class ModelSelected(Event):
    """The selector's decision for a task."""

    SUBJECT: ClassVar[str] = "model_selected"

    task_id: UUID
    scope: Scope
    task_type: TaskType
    model: ModelName
    provider: ProviderName
    tier: Tier
    fallback_chain: list[ModelName] = Field(default_factory=list, max_length=50)
    policy: Label | None = None
    """The routing policy that chose the candidates."""
    estimated_input_tokens: int = Field(ge=0)
    estimated_output_tokens: int = Field(ge=0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    """The policy's output cap: pass it to the provider as max_tokens (the estimate and hold assume it)."""
    estimated_cost_usd: CallUsd
    baseline_model: ModelName
    baseline_cost_usd: CallUsd
    strategy: Strategy
    """The strategy that made the decision (complexity when hybrid fell back)."""
    fallback_reason: Text | None = None
    """Why the requested strategy was not the one that decided (hybrid's learner failed or was overruled)."""
    confidence: float = Field(ge=0, le=1)
    complexity: float = Field(ge=0, le=1)
    pattern: Label
    reasoning: Text
    experimental: bool = False
    candidates: list[CandidateScore] = Field(default_factory=list, max_length=200)
    reservation_id: UUID | None = None
    decision_latency_ms: float = Field(ge=0)
    price_table: int | None = Field(default=None, ge=0, le=2**62)
    """The revision of the published catalog (models and prices) the estimates were priced with."""


class RejectionReason(StrEnum):
    budget_exhausted = "budget_exhausted"
    approval_required = "approval_required"
    over_request_cap = "over_request_cap"
    no_model_within_constraints = "no_model_within_constraints"
    invalid_request = "invalid_request"
    """The task is not a valid TaskArrived, or reuses the id of a task already settled (the detail
    says which); nothing was decided."""
    unavailable = "unavailable"
    """A service the decision needs did not answer within the task's deadline
    (``ROUTEWISE_DECISION_DEADLINE``); submitting it again later may succeed."""


class TaskRejected(Event):
    SUBJECT: ClassVar[str] = "task_rejected"
    task_id: UUID
    scope: Scope
    task_type: TaskType
    reason: RejectionReason
    detail: Text
    budget_id: UUID | None = None
    """The budget that refused, when a budget did."""


class _CallCost(Event):
    """What one call cost: the fields a reported and a recorded cost share."""

    task_id: UUID
    scope: Scope
    task_type: TaskType = "normal"
    model: ModelName
    provider: ProviderName
    input_tokens: int = Field(ge=0, le=100_000_000)
    output_tokens: int = Field(ge=0, le=100_000_000)
    cached_input_tokens: int = Field(default=0, ge=0, le=100_000_000)
    cache_write_tokens: int = Field(default=0, ge=0, le=100_000_000)
    cost_usd: CallUsd
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    """Which call of the task this was (1: the decided model); its cost settles that call's hold."""
    latency_ms: float | None = Field(default=None, ge=0)
    success: bool = True
    error_type: Annotated[str, Field(max_length=200)] | None = None
    """Required, and non-empty, when the call failed (``success`` false)."""
    cached: bool = False
    """The gateway answered from its response cache: no provider call was made (``cost_usd`` 0, no
    tokens); ``model`` is the one whose stored answer was returned. Consumers that learn from calls
    (budgets, health, output profiles) skip it; metrics counts it as a cache hit."""
    avoided_cost_usd: CallUsd | None = None
    """A cache hit's avoided cost: what the stored answer cost when it was made."""

    @model_validator(mode="after")
    def _consistent(self) -> _CallCost:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens + cache_write_tokens cannot exceed input_tokens")
        if self.cached and (self.cost_usd or not self.success or self.input_tokens or self.output_tokens):
            raise ValueError("a cache hit is a successful answer at no cost and no tokens")
        if self.avoided_cost_usd is not None and not self.cached:
            raise ValueError("avoided_cost_usd is a cache hit's (cached true)")
        if self.success and self.error_type:
            raise ValueError("a successful call has no error_type")
        if not self.success and not self.error_type:
            raise ValueError("a failed call needs an error_type")
        return self


class CostReported(_CallCost):
    """What a call cost, as an application reports it (``RoutewiseClient.record_cost``, ``routewise
    record``). cost-predictor checks it against the price book and answers with CostRecorded (what
    every consumer applies) or CostRefused (why not); nothing else applies a reported cost."""

    SUBJECT: ClassVar[str] = "cost_reported"

    cost_usd: Usd  # any amount: one past what a call may cost is refused, with its reason


class CostRecorded(_CallCost):
    """What a call really cost: the gateway's (it prices the calls it carries), or a reported cost
    cost-predictor accepted. Budgets, metrics, performance statistics and learning apply it."""

    SUBJECT: ClassVar[str] = "cost_recorded"

    self_priced: bool = False
    """Accepted on the application's word: no price is known for the model, or the cost is far from
    what its tokens cost, and the deployment accepts such costs (``ROUTEWISE_ALLOW_SELF_PRICED``).
    Reports show self-priced spend apart."""
    reported_event_id: UUID | None = None
    """The CostReported this cost was accepted from (None: the gateway recorded it)."""


class CostRefusal(StrEnum):
    """Why cost-predictor refused a reported cost."""

    unknown_model = "unknown_model"
    """No price is known for the model (as its provider serves it): the cost cannot be checked."""
    implausible_cost = "implausible_cost"
    """The cost is too far from what the call's tokens cost at the known price, or more than any
    call may cost."""
    unknown_task = "unknown_task"
    """No decision (ModelSelected) of the task is known in the report's org: none came within
    ``ROUTEWISE_COST_REPORT_WAIT`` of the report, or the task is another org's. Only the calls of
    a task Routewise routed are counted."""
    model_not_in_decision = "model_not_in_decision"
    """The task was decided, but the model is neither the one chosen nor in its fallback chain."""


class CostRefused(Event):
    """A reported cost cost-predictor did not accept, and why: nothing was charged for it."""

    SUBJECT: ClassVar[str] = "cost_refused"

    task_id: UUID
    scope: Scope
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    model: ModelName
    provider: ProviderName
    reported_event_id: UUID
    """The CostReported refused."""
    reason: CostRefusal
    detail: Text
    reported_cost_usd: Usd
    expected_cost_usd: Usd | None = None
    """What the call's tokens cost at the known price (none for an unknown model)."""


Reason = Annotated[str, Field(min_length=1, max_length=500)]
"""Why a person changed something, in their words (bounded)."""
ActorId = Annotated[str, Field(min_length=1, max_length=128)]
"""Who changed something: the authenticated actor (over HTTP, the gateway's key)."""


class CostAdjusted(Event):
    """A recorded cost corrected, or voided (``void``: its cost is now 0), by a person: each
    consumer moves what it keeps of the cost by ``delta_usd``. Its ``event_id`` is the adjustment's id."""

    SUBJECT: ClassVar[str] = "cost_adjusted"

    task_id: UUID
    attempt: int = Field(ge=1, le=MAX_ATTEMPTS)
    scope: Scope
    task_type: TaskType = "normal"
    model: ModelName
    provider: ProviderName
    cost_event_id: UUID
    """The CostRecorded adjusted."""
    recorded_at: UtcDatetime
    """That cost's ``occurred_at``: the budget periods and statistics buckets it counted in."""
    sequence: int = Field(ge=1, le=10_000)
    """Which adjustment of that cost this is (1, 2, ...): they apply in this order."""
    previous_cost_usd: CallUsd
    cost_usd: CallUsd
    delta_usd: SignedCallUsd
    """``cost_usd`` − ``previous_cost_usd``."""
    void: bool = False
    self_priced: bool = False
    """The cost adjusted was self-priced (see CostRecorded)."""
    reason: Reason
    actor: ActorId

    @model_validator(mode="after")
    def _arithmetic(self) -> CostAdjusted:
        if self.delta_usd != self.cost_usd - self.previous_cost_usd:
            raise ValueError("delta_usd must be cost_usd - previous_cost_usd")
        if self.void and self.cost_usd:
            raise ValueError("a void sets the cost to 0")
        return self


class FeedbackRecorded(Event):
    """How good an answer was (0..1), possibly long after its cost."""

    SUBJECT: ClassVar[str] = "feedback_recorded"

    task_id: UUID
    scope: Scope
    model: ModelName
    quality: float = Field(ge=0, le=1)
    task_type: TaskType = "normal"
    comment: str | None = Field(default=None, max_length=2000)


class BudgetAlert(Event, ScopedContract):
    """Spend on a budget reached a threshold for the first time in a period."""

    SUBJECT: ClassVar[str] = "budget_alerts"

    budget_id: UUID
    budget_name: Label
    scope_type: ScopeType
    scope_id: ScopeId
    org_id: Identifier | None = Field(default=None, description="the org of the cost that crossed the threshold")
    period_start: UtcDatetime
    period_end: UtcDatetime | None
    threshold_percent: int = Field(ge=1, le=100)
    spent_usd: Usd
    limit_usd: Usd
    percent: Percent
    actions: list[Label] = Field(max_length=10)
    """This threshold's actions."""
    actions_in_force: list[Label] = Field(max_length=10)
    """Every action in force on the budget now (this threshold's and lower ones')."""
    cause_event_id: UUID | None = None


class ModelHealthChanged(Event):
    """performance-tracker took a model out of rotation, put it on probation, or brought it back."""

    SUBJECT: ClassVar[str] = "model_health_changed"

    model: ModelName
    previous: HealthState
    state: HealthState
    reason: Text
    error_rate: float | None = Field(default=None, ge=0, le=1)
    samples: int = Field(default=0, ge=0)


EVENT_TYPES: tuple[type[Event], ...] = (
    TaskArrived,
    ModelSelected,
    TaskRejected,
    CostReported,
    CostRecorded,
    CostRefused,
    CostAdjusted,
    FeedbackRecorded,
    BudgetAlert,
    ModelHealthChanged,
)
