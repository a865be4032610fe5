"""SQL of the gateway's own schema: the provider attempts of each task, and the response cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

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


# --- the response cache ---------------------------------------------------------------------


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: the provider's completion (``model`` the catalog id that answered), its
    usage and what it cost when it was made."""

    org_id: str
    key: bytes
    answer: dict[str, Any]
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: Decimal
    source_task_id: UUID


async def cached_answer(conn: Connection, org_id: str, key: bytes, now: datetime) -> CachedAnswer | None:
    """The org's unexpired answer under ``key`` (the org is checked here as well as in the key)."""
    row = await conn.fetchrow(
        """SELECT org_id, cache_key, answer, model, provider, input_tokens, output_tokens, cached_input_tokens,
                  cost_usd, source_task_id
           FROM response_cache WHERE org_id = $1 AND cache_key = $2 AND expires_at > $3""",
        org_id,
        key,
        now,
    )
    if row is None or row["org_id"] != org_id:
        return None
    return CachedAnswer(
        org_id=row["org_id"],
        key=bytes(row["cache_key"]),
        answer=row["answer"],
        model=row["model"],
        provider=row["provider"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cached_input_tokens=row["cached_input_tokens"],
        cost_usd=row["cost_usd"],
        source_task_id=row["source_task_id"],
    )


async def store_answer(conn: Connection | asyncpg.Pool, entry: CachedAnswer, now: datetime, ttl_s: float) -> None:
    """Store (or replace) the org's answer under its key, served until ``now + ttl_s``."""
    await conn.execute(
        """INSERT INTO response_cache (org_id, cache_key, answer, model, provider, input_tokens, output_tokens,
               cached_input_tokens, cost_usd, source_task_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (org_id, cache_key) DO UPDATE SET answer = EXCLUDED.answer, model = EXCLUDED.model,
               provider = EXCLUDED.provider, input_tokens = EXCLUDED.input_tokens,
               output_tokens = EXCLUDED.output_tokens, cached_input_tokens = EXCLUDED.cached_input_tokens,
               cost_usd = EXCLUDED.cost_usd, source_task_id = EXCLUDED.source_task_id,
               created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, hits = 0, last_hit_at = NULL""",
        entry.org_id,
        entry.key,
        entry.answer,
        entry.model,
        entry.provider,
        entry.input_tokens,
        entry.output_tokens,
        entry.cached_input_tokens,
        entry.cost_usd,
        entry.source_task_id,
        now,
        now + timedelta(seconds=ttl_s),
    )


@dataclass(frozen=True)
class CacheHit:
    task_id: UUID
    scope: Scope
    task_type: str
    entry: CachedAnswer
    stream: bool


async def record_hit(conn: Connection, hit: CacheHit, now: datetime) -> None:
    """A task answered from the cache, and the entry's hit count."""
    await conn.execute(
        """INSERT INTO cache_hits (task_id, org_id, scope, task_type, cache_key, model, provider, stream,
               avoided_cost_usd, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (task_id) DO NOTHING""",
        hit.task_id,
        hit.scope.org_id,
        hit.scope.model_dump(mode="json", exclude_none=True),
        hit.task_type,
        hit.entry.key,
        hit.entry.model,
        hit.entry.provider,
        hit.stream,
        hit.entry.cost_usd,
        now,
    )
    await conn.execute(
        "UPDATE response_cache SET hits = hits + 1, last_hit_at = $3 WHERE org_id = $1 AND cache_key = $2",
        hit.entry.org_id,
        hit.entry.key,
        now,
    )


async def hit_of(conn: Connection, task_id: UUID) -> tuple[Scope, str, str] | None:
    """A task answered from the cache: its scope, model and task type."""
    row = await conn.fetchrow("SELECT scope, model, task_type FROM cache_hits WHERE task_id = $1", task_id)
    return None if row is None else (Scope.model_validate(row["scope"]), row["model"], row["task_type"])


async def cache_entry_hits(conn: Connection | asyncpg.Pool, org_id: str, key: bytes) -> int | None:
    value = await conn.fetchval("SELECT hits FROM response_cache WHERE org_id = $1 AND cache_key = $2", org_id, key)
    return None if value is None else int(value)
