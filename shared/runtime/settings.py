"""Runtime settings, read from ``ROUTEWISE_*`` environment variables."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from routewise.contracts.subjects import Subjects

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class Settings(BaseSettings):
    """One settings object for services and clients alike."""

    model_config = SettingsConfigDict(env_prefix="ROUTEWISE_", extra="ignore", frozen=True)

    namespace: str = Field(
        default="routewise",
        description="First token of every subject and stream; tests use their own to stay isolated.",
    )
    nats_url: str = DEFAULT_NATS_URL
    nats_user: str | None = Field(
        default=None, description="This process's NATS user (a service's own, a tenant's, the operator's)."
    )
    nats_password: str | None = None
    database_url: str | None = Field(
        default=None, description="DSN of this service's own Postgres role (services only)."
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    max_deliver: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered.")
    retry_backoff: list[float] = Field(
        default=[1.0, 5.0, 15.0, 30.0],
        description="Seconds before redelivery n (the last value repeats).",
    )
    ack_wait: float = Field(default=60.0, gt=0, description="Seconds a handler has before its message is redelivered.")
    decision_deadline: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="Seconds a task may wait, from its arrival on the bus, for a service its decision needs"
        " (cost-predictor, budget-enforcer) before it is rejected as unavailable.",
    )
    request_timeout: float = Field(default=5.0, gt=0)
    nats_reconnect_attempts: int = Field(
        default=60,
        ge=1,
        le=10_000,
        description="Reconnects to NATS before a service gives the bus up for gone and exits (a supervisor"
        " restarts it).",
    )
    nats_reconnect_wait: float = Field(default=2.0, gt=0, le=60, description="Seconds between reconnects to NATS.")
    stop_grace: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a service whose bus is gone has to stop before it exits anyway.",
    )
    jaeger_url: str | None = Field(
        default=None, description="Jaeger's UI (e.g. http://localhost:16686): the CLI links each task's trace."
    )
    db_pool_size: int = Field(default=20, ge=2, le=200, description="Postgres connections per service process.")
    consumer_batch: int = Field(
        default=100,
        ge=1,
        le=1_000,
        description="Most events a bookkeeping consumer applies in one transaction (one inbox write, one commit).",
    )
    batch_linger: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="Seconds a bookkeeping consumer, once an event came, waits for more to apply with it.",
    )
    decision_workers: int = Field(
        default=16, ge=1, le=256, description="Tasks one selector replica decides at once (each waits on requests)."
    )
    health_error_rate: float = Field(default=0.5, gt=0, le=1, description="Error rate that demotes a model.")
    health_min_samples: int = Field(default=10, ge=1, description="Outcomes needed in the window before demoting.")
    health_window: float = Field(default=300.0, gt=0, description="Seconds of outcomes the error rate looks at.")
    health_cooldown: float = Field(default=60.0, gt=0, description="Seconds a demoted model waits for probation.")
    health_probation_successes: int = Field(default=3, ge=1, description="Successes on probation that promote.")
    reservation_ttl: float = Field(
        default=900.0, gt=0, description="Seconds a budget reservation holds before it expires unsettled."
    )
    outbox_interval: float = Field(default=1.0, gt=0, description="Seconds between outbox sweeps.")
    inbox_retention_days: float = Field(
        default=7.0, ge=1, description="Days an applied event's id is kept (past any redelivery or republish)."
    )
    outbox_retention_days: float = Field(default=7.0, gt=0, description="Days a published outbox row is kept.")
    task_retention_days: float = Field(
        default=30.0,
        ge=1,
        description="Days per-task working data is kept: the selector's prompt features (feedback later than"
        " this is not learnt), cost-predictor's estimates awaiting their cost, performance-tracker's raw outcomes,"
        " feedback, task patterns and counted calls (its statistics are kept in buckets), and cost adjustments"
        " parked waiting for a cost that never came.",
    )
    prune_interval: float = Field(default=3600.0, gt=0, description="Seconds between retention prunes.")
    tasks_stream_max_age_hours: float = Field(
        default=24.0,
        ge=0.1,
        description="Hours the tasks stream (TaskArrived, with its prompt) keeps a task: a selector down for"
        " less than this still decides it. At most the inbox's retention, so a task kept is never applied twice.",
    )
    events_stream_max_age_days: float = Field(
        default=30.0,
        ge=1,
        description="Days the events stream keeps decisions, rejections, costs, feedback and model health"
        " (the services' Postgres is the ledger; the stream keeps what a consumer that was down must still apply).",
    )
    alerts_stream_max_age_days: float = Field(
        default=30.0, ge=1, description="Days the alerts stream keeps budget alerts (``routewise alerts`` shows them)."
    )
    dead_letter_stream_max_age_days: float = Field(
        default=14.0, ge=1, description="Days a dead letter is kept for reading and replay."
    )
    dead_letter_stream_max_bytes: int = Field(
        default=1024**3,
        ge=1024**2,
        description="Bytes the dead-letter stream may hold; past it the oldest dead letters are dropped.",
    )
    redact_prompts: bool = Field(
        default=False,
        description="Dead letters of TaskArrived keep the prompt and messages' text as a SHA-256 and a length"
        " only (such a dead letter cannot be replayed). Off: kept as sent, for replay.",
    )
    cost_plausibility_ratio: Decimal = Field(
        default=Decimal(10),
        gt=1,
        le=1_000_000,
        allow_inf_nan=False,
        description="cost-predictor: a reported cost more than this many times what its tokens cost at the known"
        " price, or less than that price divided by it, is refused as implausible_cost (see the floor).",
    )
    cost_plausibility_floor: Decimal = Field(
        default=Decimal("0.01"),
        ge=0,
        le=10_000,
        allow_inf_nan=False,
        description="cost-predictor: USD a reported cost may differ from its price whatever the ratio: a"
        " cent by default, so a tiny call rounded up (or to the cent) is never refused.",
    )
    allow_self_priced: bool = Field(
        default=False,
        description="cost-predictor: accept a reported cost for a model without a known price, or far from"
        " its price, flagged self_priced (reports show it apart), instead of refusing it.",
    )
    cost_report_wait: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="cost-predictor: seconds a reported cost waits, from its arrival on the bus, for its task's"
        " decision to be known (a report may overtake it) before it is refused as unknown_task.",
    )

    catalog_path: str | None = Field(
        default=None,
        max_length=4096,
        description="The shipped model catalog (a TOML file of [[models]]) every service starts from, instead of"
        " the built-in one; models registered at run time add to it (``routewise models register``).",
    )
    provider_base_url: str | None = Field(
        default=None,
        max_length=2000,
        description="gateway: one OpenAI-compatible base URL for every provider without an entry in"
        " providers_path (``routewise dev`` and the tests point it at the mock provider).",
    )
    providers_path: str | None = Field(
        default=None,
        max_length=4096,
        description="gateway: a TOML file of providers (base URL, API key variable, model names); default:"
        " every catalog provider at its public OpenAI-compatible URL, or at provider_base_url when set.",
    )
    provider_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="gateway: seconds one provider call may take before the next model."
    )
    gateway_decision_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="gateway: seconds a request waits for its task's decision before answering 504.",
    )
    gateway_cache_orgs: Annotated[list[str], NoDecode] = Field(
        default=[],
        max_length=10_000,
        description="gateway: orgs whose requests use the response cache unless they say `X-Routewise-Cache: no`"
        " (comma-separated); other orgs' requests use it when they ask (`X-Routewise-Cache: use`).",
    )
    gateway_cache_ttl: float = Field(
        default=3600.0, gt=0, le=30 * 86_400, description="gateway: seconds a cached answer is served."
    )
    gateway_cache_max_bytes: int = Field(
        default=1024**2,
        ge=1024,
        le=64 * 1024**2,
        description="gateway: an answer larger than this (its JSON, in bytes) is not cached.",
    )
    operator_orgs: Annotated[list[str], NoDecode] = Field(
        default=[],
        max_length=1_000,
        description="gateway: orgs whose org-wide admin keys may change what is every org's over HTTP (prices,"
        " routing policies), comma-separated. Default: none (only the CLI on the bus, the operator, changes them).",
    )

    @field_validator("gateway_cache_orgs", "operator_orgs", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [org.strip() for org in value.split(",") if org.strip()]
        return value

    @field_validator("namespace")
    @classmethod
    def _token(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", value):
            raise ValueError("namespace must be a lowercase NATS token: [a-z][a-z0-9_-]{0,31}")
        return value

    @model_validator(mode="after")
    def _tasks_remembered(self) -> Settings:
        if self.tasks_stream_max_age_hours > self.inbox_retention_days * 24:
            raise ValueError(
                "tasks_stream_max_age_hours may not exceed inbox_retention_days: a task the stream delivers"
                " again (a consumer created anew, the move to the tasks stream) must still be known as applied"
            )
        if self.tasks_stream_max_age_hours * 3600 <= self.decision_deadline:
            raise ValueError(
                "tasks_stream_max_age_hours must be longer than decision_deadline: a task waiting for a service"
                " must still be in the stream, to be delivered again if its selector stops"
            )
        return self

    @cached_property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace)

    def backoff_for(self, delivery: int) -> float:
        """Delay before the next delivery, after delivery number ``delivery`` (1-based) failed."""
        index = min(max(delivery, 1), len(self.retry_backoff)) - 1
        return self.retry_backoff[index] if self.retry_backoff else 0.0

    @property
    def nats_inbox_prefix(self) -> str:
        """Where this process's replies come (``inbox_prefix``)."""
        return inbox_prefix(self.nats_user)


def inbox_prefix(user: str | None) -> str:
    """Where a NATS user's replies come (``_INBOX_<user>``): a user may subscribe only to its own."""
    return f"_INBOX_{user}" if user else "_INBOX"
