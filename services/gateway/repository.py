"""SQL of the gateway's own schema: the provider attempts of each task."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from routewise.contracts.events import Scope
from routewise.runtime.db import Connection


@dataclass(frozen=True)
class Attempt:
    task_id: UUID
    attempt: int
    model: str
    provider: str
    provider_model: str
    ok: bool
    scope: Scope
    task_type: str
    latency_ms: float
    stream: bool = False
    ttft_ms: float | None = None
    http_status: int | None = None
    error_type: str | None = None
    error_detail: str | None = None
    retryable: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    usage_source: str | None = None
    cost_usd: Decimal = Decimal(0)
    cost_event_id: UUID | None = None


async def record_attempt(conn: Connection, a: Attempt) -> None:
    """One attempt, once (a task's attempt number is written by one request only)."""
    await conn.execute(
        """INSERT INTO attempts (task_id, attempt, model, provider, provider_model, status, http_status,
               error_type, error_detail, retryable, stream, latency_ms, ttft_ms, input_tokens, output_tokens,
               cached_input_tokens, usage_source, cost_usd, cost_event_id, org_id, scope, task_type)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
           ON CONFLICT (task_id, attempt) DO NOTHING""",
        a.task_id,
        a.attempt,
        a.model,
        a.provider,
        a.provider_model,
        "ok" if a.ok else "failed",
        a.http_status,
        a.error_type,
        (a.error_detail or "")[:2000] or None,
        a.retryable,
        a.stream,
        a.latency_ms,
        a.ttft_ms,
        a.input_tokens,
        a.output_tokens,
        a.cached_input_tokens,
        a.usage_source,
        a.cost_usd,
        a.cost_event_id,
        a.scope.org_id,
        a.scope.model_dump(mode="json", exclude_none=True),
        a.task_type,
    )


async def attempts_of(conn: Connection, task_id: UUID) -> list[Attempt]:
    rows = await conn.fetch(
        """SELECT task_id, attempt, model, provider, provider_model, status, http_status, error_type, error_detail,
                  retryable, stream, latency_ms, ttft_ms, input_tokens, output_tokens, cached_input_tokens,
                  usage_source, cost_usd, cost_event_id, scope, task_type
           FROM attempts WHERE task_id = $1 ORDER BY attempt""",
        task_id,
    )
    return [
        Attempt(
            task_id=r["task_id"],
            attempt=r["attempt"],
            model=r["model"],
            provider=r["provider"],
            provider_model=r["provider_model"],
            ok=r["status"] == "ok",
            scope=Scope.model_validate(r["scope"]),
            task_type=r["task_type"],
            latency_ms=r["latency_ms"],
            stream=r["stream"],
            ttft_ms=r["ttft_ms"],
            http_status=r["http_status"],
            error_type=r["error_type"],
            error_detail=r["error_detail"],
            retryable=r["retryable"],
            input_tokens=r["input_tokens"],
            output_tokens=r["output_tokens"],
            cached_input_tokens=r["cached_input_tokens"],
            usage_source=r["usage_source"],
            cost_usd=r["cost_usd"],
            cost_event_id=r["cost_event_id"],
        )
        for r in rows
    ]
