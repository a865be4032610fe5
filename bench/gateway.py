"""The latency the gateway adds over calling the provider directly, and the latency LiteLLM's proxy
adds over the same provider, side by side in one run (issue 13, point 10).

Three targets answer the same OpenAI chat-completions request, each at 50, 100 and 200 requests
per second offered (open loop: requests start on schedule whatever the answers do), plain and
streamed:

- ``direct``: the mock provider (``routewise.dev.mock_provider``, a process of its own, every
  answer exactly ``max_tokens`` tokens long, no latency of its own);
- ``gateway``: Routewise's gateway (``routewise/auto``: a routing decision over the bus, the
  provider call, the cost through the outbox), the five services and the gateway as processes;
- ``litellm``: LiteLLM's proxy (installed from PyPI into an environment of its own the first
  time, ``~/.cache/routewise/bench-litellm-<version>``; no database), routing nothing: one model
  to the same mock.

Added latency = a target's percentile minus the direct one's; the ratio is the gateway's added
p50 (p99) over LiteLLM's. Results in bench/results/gateway.json.

    uv run --frozen python -m bench.gateway [--seconds 8] [--rates 50,100,200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from bench.common import Environment, environment_servers, latency_summary, write_results
from routewise.client import RoutewiseClient
from routewise.contracts.gateway import CreateKey, KeyCreated
from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import free_port, wait_for_port
from routewise.dev.stack import Stack
from routewise.runtime.settings import Settings

LITELLM_VERSION = "1.108.7"
MAX_TOKENS = 64
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
DIRECT_MODEL = "gpt-4o-mini"


def litellm_bin() -> Path:
    """LiteLLM's proxy, installed once into a virtual environment of its own."""
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "routewise"
    venv = home / f"bench-litellm-{LITELLM_VERSION}"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", flush=True)
        found = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells its own path
        uv = [found] if found else ["python3", "-m", "uv"]
        subprocess.run([*uv, "venv", "-q", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run(
            [*uv, "pip", "install", "-q", "--python", python, f"litellm[proxy]=={LITELLM_VERSION}"], check=True
        )
    return binary


@contextmanager
def process(args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A server process answering on ``port`` (its URL), stopped after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_for_port("127.0.0.1", port, 120, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def mock_provider(workdir: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "routewise.dev.mock_provider", "--port", str(port), "--seed", "7", "--full-length"]
    with process(args, port, workdir / "mock.log") as url:
        yield url


LITELLM_KEY = f"sk-bench-{secrets.token_hex(32)}"
"""LiteLLM's master key: it authenticates every request, as the gateway does with its keys."""


@contextmanager
def litellm_proxy(workdir: Path, mock_url: str) -> Iterator[str]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {DIRECT_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{DIRECT_MODEL}\n"
        f"      api_base: {mock_url}/v1\n"
        "      api_key: mock\n"
    )
    port = free_port()
    args = [str(litellm_bin()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with process(
        args, port, workdir / "litellm.log", env={"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    ) as url:
        yield url


@contextmanager
def gateway(env: Environment, mock_url: str) -> Iterator[tuple[str, Stack]]:
    """The five services and the gateway as processes, every provider at the mock."""
    stack = Stack(
        env.nats_url,
        env.dsns,
        env.namespace,
        env.workdir / "logs",
        extra_env={"ROUTEWISE_PROVIDER_BASE_URL": f"{mock_url}/v1", "ROUTEWISE_LOG_LEVEL": "WARNING"},
        services=SERVICES,
    )
    try:
        stack.start()
        stack.wait_ready(120)
        yield f"http://127.0.0.1:{stack.processes['gateway'].port}", stack
    finally:
        stack.stop()


async def a_key(settings: Settings) -> str:
    async with RoutewiseClient(settings) as rw:
        created = await rw.request(
            rw.subjects.keys_create, CreateKey(scope="org:bench", name="bench", actor="bench"), KeyCreated
        )
    return created.key


async def one(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[float, int]:
    """Seconds until the whole answer (a stream: its last byte) is in, and the status."""
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        async for _ in response.aiter_raw():
            pass
    return time.perf_counter() - started, response.status_code


async def level(url: str, model: str, key: str, rate: int, seconds: float, stream: bool) -> dict[str, Any]:
    """``rate`` requests a second for ``seconds``, started on schedule; their latencies."""
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(5):  # connections open, caches warm
            await one(client, url, body, headers)
        loop = asyncio.get_running_loop()
        start, count = loop.time() + 0.1, int(rate * seconds)
        pending = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            pending.append(asyncio.create_task(one(client, url, body, headers)))
        results = await asyncio.gather(*pending, return_exceptions=True)
        took = loop.time() - start
    ok = [r[0] for r in results if isinstance(r, tuple) and r[1] == 200]
    errors = len(results) - len(ok)
    return {
        "offered_rps": rate,
        "requests": count,
        "errors": errors,
        "answered_rps": round(len(ok) / took, 1),
        **(latency_summary(ok) if ok else {}),
    }


def added(target: dict[str, Any], direct: dict[str, Any]) -> dict[str, float | None]:
    return {q: round(target[q] - direct[q], 2) if q in target and q in direct else None for q in ("p50_ms", "p99_ms")}


async def measure(targets: dict[str, tuple[str, str, str]], rates: list[int], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("plain", "stream"):
        for rate in rates:
            row = {}
            for name, (url, model, key) in targets.items():
                row[name] = await level(url, model, key, rate, seconds, stream=mode == "stream")
                print(f"{mode:6} {rate:4}/s {name:8} {row[name]}", flush=True)
            row["gateway_added"] = added(row["gateway"], row["direct"])
            row["litellm_added"] = added(row["litellm"], row["direct"])
            ratios = {}
            for q in ("p50_ms", "p99_ms"):
                ours, theirs = row["gateway_added"][q], row["litellm_added"][q]
                ratios[q] = round(ours / theirs, 2) if ours is not None and theirs else None
            row["gateway_over_litellm_added"] = ratios
            out[f"{mode}@{rate}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="per target and level")
    parser.add_argument("--rates", default="50,100,200", help="requests per second offered")
    parser.add_argument("--results", default="gateway", help="the results file's name (bench/results/NAME.json)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with (
        environment_servers() as env,
        mock_provider(env.workdir) as mock_url,
        gateway(env, mock_url) as (gateway_url, _stack),
        litellm_proxy(env.workdir, mock_url) as litellm_url,
    ):
        key = asyncio.run(a_key(Settings(nats_url=env.nats_url, namespace=env.namespace)))
        targets = {
            "direct": (mock_url, DIRECT_MODEL, "mock"),
            "gateway": (gateway_url, "routewise/auto", key),
            "litellm": (litellm_url, DIRECT_MODEL, LITELLM_KEY),
        }
        figures = asyncio.run(measure(targets, rates, args.seconds))
    path = write_results(
        args.results,
        {
            "seconds_per_level": args.seconds,
            "max_tokens": MAX_TOKENS,
            "litellm_version": LITELLM_VERSION,
            "note": "all on one machine: the load generator, the mock, LiteLLM, NATS, Postgres and the six "
            "Routewise processes share its cores",
            "levels": figures,
        },
    )
    print(f"results in {path}")


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
