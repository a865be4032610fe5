"""Benchmark: what authenticating a gateway API key costs on the hot path.

``authenticate`` with its in-process cache (a key checked in the last 5 s) and without it (the
key's row read and its hash compared on every call), against the gateway's own schema on a real
Postgres holding ``--keys`` keys; then the same with ``--concurrency`` callers at once.

    uv run python -m bench.keys_auth [--keys 10000] [--calls 3000] [--concurrency 32]

Writes bench/results/keys_auth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import asyncpg

from bench.common import environment_servers, write_results
from routewise.runtime.db import create_pool, migrate
from routewise.services.gateway import keys

MIGRATIONS = Path(keys.__file__).parent / "migrations"


def micros(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e6, 1)

    return {"p50_us": pct(0.5), "p99_us": pct(0.99), "mean_us": round(statistics.fmean(ordered) * 1e6, 1)}


async def fill(pool: asyncpg.Pool, count: int) -> str:
    """``count`` keys in the table; the last one's key."""
    rows = [keys.new_key() for _ in range(count)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "api_keys",
            records=[(key_id, keys.key_hash(key), "bench", "acme") for key_id, key in rows],
            columns=["id", "key_hash", "org_id", "created_by"],
        )
    return rows[-1][1]


async def timed(pool: asyncpg.Pool, header: str, cache: keys.KeyCache, calls: int, concurrency: int) -> list[float]:
    samples: list[float] = []

    async def caller(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            await keys.authenticate(pool, header, cache=cache)
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
    return samples


async def run(dsn: str, key_count: int, calls: int, concurrency: int) -> dict[str, object]:
    pool = await create_pool(dsn, "gateway", min_size=4, max_size=10)
    try:
        await migrate(pool, "gateway", MIGRATIONS)
        header = f"Bearer {await fill(pool, key_count)}"
        results: dict[str, object] = {"keys": key_count, "calls": calls, "pool_size": 10}
        for label, ttl in (("cached", keys.CACHE_TTL), ("row_read_every_call", 0.0)):
            cache = keys.KeyCache(ttl=ttl)
            await keys.authenticate(pool, header, cache=cache)  # warm: the cache, last_used_at
            one = await timed(pool, header, cache, calls, 1)
            many = await timed(pool, header, cache, calls, concurrency)
            results[label] = {"sequential": micros(one), f"concurrency_{concurrency}": micros(many)}
        return results
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with environment_servers() as env:
        results = asyncio.run(run(env.dsns["gateway"], args.keys, args.calls, args.concurrency))
    results["cache_ttl_s"] = keys.CACHE_TTL
    path = write_results("keys_auth", results)
    print(path.read_text())


if __name__ == "__main__":
    main()
