"""``routewise dev``: everything on one machine, with a demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from routewise.cli.common import app, console, fail
from routewise.client.discovery import dev_state_path, home, read_dev_state
from routewise.client.urls import url_without_password
from routewise.runtime.settings import Settings

if TYPE_CHECKING:
    from routewise.dev.embedded import EmbeddedNats
    from routewise.dev.mock_provider import MockProvider
    from routewise.dev.stack import Stack

MARKER = ".routewise-dev"
"""Marks a data directory as made by `routewise dev`, the only kind --fresh may delete."""


@app.command()
def dev(
    demo: Annotated[
        bool, typer.Option("--demo", help="Send a few requests through the gateway, and show what happened.")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Stop after start-up (and the demo) instead of waiting for Ctrl-C.")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from empty NATS and Postgres data.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where embedded servers keep data [default: $ROUTEWISE_HOME/dev].")
    ] = None,
) -> None:
    """Run Routewise locally until Ctrl-C: embedded NATS and Postgres, the services and the gateway,
    and a mock LLM provider every provider is routed to (unless ROUTEWISE_PROVIDERS_PATH or
    ROUTEWISE_PROVIDER_BASE_URL says where real ones are)."""
    missing = [m for m in ("faststream", "asyncpg", "pgserver") if find_spec(m) is None]  # (nats-server: see embedded)
    if missing:
        raise fail(
            f"`routewise dev` needs the dev extra ({', '.join(missing)} missing): pip install 'routewise[dev]'", False
        )
    from routewise.dev.embedded import EmbeddedPostgres
    from routewise.dev.stack import Stack
    from routewise.runtime.bus_users import operator_url

    if (state := read_dev_state()) is not None:
        raise _already_running(state)
    data = _data_dir(data_dir or home() / "dev", fresh=fresh)
    namespace = Settings().namespace
    nats_server, operator_password = _locked_nats(data / "nats", namespace)
    postgres = EmbeddedPostgres(data / "postgres")
    stack: Stack | None = None
    mock = _mock_provider()

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop cleanly; SIGINT explicitly, as a shell may start us with it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        with console.status("starting NATS and Postgres…"):
            nats_url = operator_url(nats_server.start(), operator_password)
            dsns = asyncio.run(_prepare(Settings(nats_url=nats_url, namespace=namespace), postgres.start()))
        with console.status("starting the services and the gateway…"):
            providers = {"ROUTEWISE_PROVIDER_BASE_URL": f"{mock.start()}/v1"} if mock else {}
            stack = Stack(nats_url, dsns, namespace, data / "logs", extra_env=providers)
            stack.start()
            stack.wait_ready(timeout=90)
        settings, gateway_url = _welcome(stack, mock, data, nats_server)
        if demo:
            asyncio.run(_demo(settings, gateway_url))
        if once:
            return
        console.print("[dim]A service that stops is restarted. Ctrl-C stops everything.[/]")
        _watch(stack)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError, OSError) as exc:  # a server or service that would not start
        raise fail(f"could not start Routewise: {exc}\n(logs in {data / 'logs'})", False) from None
    finally:
        # a second Ctrl-C must not cut the clean-up short: the children are in their own sessions
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with console.status("stopping…"):
            for running in (stack, mock, nats_server, postgres):
                if running is not None:
                    running.stop()
            dev_state_path().unlink(missing_ok=True)
        console.print("stopped.")


async def _prepare(operator: Settings, admin_dsn: str) -> dict[str, str]:
    """As the operator: the streams up to date (an older release's events moved, which the services'
    users may not do), and each service's Postgres role and schema; their DSNs."""
    from routewise.client import RoutewiseClient
    from routewise.dev.provision import provision
    from routewise.runtime.streams import ensure_streams

    async with RoutewiseClient(operator) as rw:
        await ensure_streams(rw.nc.jetstream(), operator)
    return await provision(admin_dsn, "routewise")


def _already_running(state: dict[str, Any]) -> typer.Exit:
    where = url_without_password(state["nats_url"])
    return fail(f"`routewise dev` is already running (pid {state['pid']}, {where})", False)


def _locked_nats(store: Path, namespace: str) -> tuple[EmbeddedNats, str]:
    """The embedded NATS, locked: a new operator password (the CLI's) each start, each service's
    derived from it, the tenants added by `routewise bus-user create` kept (``bus_users``)."""
    from routewise.dev.embedded import EmbeddedNats
    from routewise.runtime.bus_users import new_password, service_users

    password = new_password()
    return EmbeddedNats(store, users=service_users(password, namespace)), password


def _data_dir(data: Path, *, fresh: bool) -> Path:
    """The embedded servers' data directory: one `routewise dev` made (emptied with ``fresh``), or a new one."""
    import shutil

    marker = data / MARKER
    if data.exists() and any(data.iterdir()) and not marker.exists():
        raise fail(f"{data} exists and was not made by `routewise dev`; choose another --data-dir", False)
    if fresh and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return data


def _watch(stack: Stack) -> None:
    """Until Ctrl-C: a service process that stops is started again (see ``Supervisor``), saying
    which, how it ended, where its log is, and when it is back."""
    from routewise.dev.stack import Ready, Restarted, Stopped, Supervisor

    supervisor = Supervisor(stack)
    while True:
        time.sleep(0.2)
        for event in supervisor.check():
            if isinstance(event, Stopped):
                console.print(
                    f"[yellow]{event.name} stopped (exit {event.exit_code}); see {event.log_path};"
                    f" restarting in {event.restart_in:g} s[/]"
                )
            elif isinstance(event, Restarted):
                console.print(f"{event.name} restarted (pid {event.pid}, port {event.port})")
            elif isinstance(event, Ready):
                console.print(f"[green]{event.name} is ready again[/] (http://127.0.0.1:{event.port}/readyz)")


def _welcome(stack: Stack, mock: MockProvider | None, data: Path, nats: EmbeddedNats) -> tuple[Settings, str]:
    """A development key, the state file other commands read, and how to use it all, printed."""
    settings = Settings(nats_url=stack.nats_url, namespace=stack.namespace)
    gateway_url = f"http://127.0.0.1:{stack.processes['gateway'].port}"
    key = asyncio.run(_development_key(settings))
    _write_state(
        {
            "pid": os.getpid(),
            "nats_url": stack.nats_url,  # the operator's (this file is readable by its owner only)
            "nats_users_file": str(nats.users_path),  # `routewise bus-user create` adds tenants there
            "nats_pid": nats.proc.pid if nats.proc else None,
            "namespace": stack.namespace,
            "gateway_url": gateway_url,
            "mock_provider_url": mock.url if mock else None,
            "services": {n: p.port for n, p in stack.processes.items()},
        }
    )
    _print_stack(stack.nats_url, stack, data)
    _print_gateway(gateway_url, key, mock.url if mock else None)
    return settings, gateway_url


def _write_state(state: dict[str, Any]) -> None:
    path = dev_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as fh:
        json.dump(state, fh)
    os.replace(fh.name, path)


def _print_stack(nats_url: str, stack: Any, data: Path) -> None:
    table = Table(title="Routewise is running", title_justify="left")
    table.add_column("service")
    table.add_column("health / metrics")
    table.add_column("log")
    for name, sp in stack.processes.items():
        table.add_row(name, f"http://127.0.0.1:{sp.port}/readyz  /metrics", str(sp.log_path))
    console.print(table)
    console.print(
        f"NATS: [bold]{url_without_password(nats_url)}[/], locked: the CLI connects as the operator"
        f" (saved to {dev_state_path()}, other commands use it), each service as itself;"
        " an org's applications: `routewise bus-user create --org ID`"
    )
    console.print(f"Data: {data}")


DEV_KEY_NAME = "routewise dev"
DEV_ORG = "dev"


def _mock_provider() -> MockProvider | None:
    """The mock LLM provider every provider is routed to, unless real ones are configured."""
    if os.environ.get("ROUTEWISE_PROVIDERS_PATH") or os.environ.get("ROUTEWISE_PROVIDER_BASE_URL"):
        return None
    from routewise.dev.mock_provider import MockProvider

    return MockProvider(latency_ms=150.0, per_token_ms=2.0)


async def _development_key(settings: Settings, org: str = DEV_ORG) -> str:
    """A new API key for ``org``, its admin (it may also manage the org's budgets over the gateway's
    API; the secret is shown once, so each start makes one); the keys an earlier start made are revoked."""
    from routewise.client import RoutewiseClient
    from routewise.contracts.gateway import CreateKey, KeyCreated, KeyList, KeyRevoked, ListKeys, RevokeKey

    async with RoutewiseClient(settings) as rw:
        subjects = rw.subjects
        earlier = await rw.request(subjects.keys_list, ListKeys(org=org, include_revoked=False), KeyList)
        for old in earlier.keys:
            if old.name == DEV_KEY_NAME:
                await rw.request(subjects.keys_revoke, RevokeKey(id=old.id, actor=DEV_KEY_NAME), KeyRevoked)
        created = await rw.request(
            subjects.keys_create,
            CreateKey(scope=f"org:{org}", name=DEV_KEY_NAME, role="admin", actor=DEV_KEY_NAME),
            KeyCreated,
        )
    return created.key


def _print_gateway(gateway_url: str, key: str, mock_url: str | None) -> None:
    where = f"the mock provider at {mock_url}" if mock_url else "the providers configured"
    console.print(
        f"Gateway (OpenAI-compatible): [bold]{gateway_url}/v1[/]  (calls go to {where})\n"
        f"Development key for org {DEV_ORG!r}, its admin (shown once; a new one each start): [bold]{key}[/]",
        highlight=False,
    )
    console.print(
        "\n".join(
            [
                "",
                f"export OPENAI_BASE_URL={gateway_url}/v1 OPENAI_API_KEY={key}  # the OpenAI SDK reads these",
                "",
                f"curl {gateway_url}/v1/chat/completions -H 'Authorization: Bearer {key}' \\",
                "  -H 'Content-Type: application/json' \\",
                """  -d '{"model": "routewise/auto", "messages": [{"role": "user", "content": "Hello!"}]}'""",
                "",
                "from openai import OpenAI",
                f'client = OpenAI(base_url="{gateway_url}/v1", api_key="{key}")',
                'answer = client.chat.completions.create(model="routewise/auto", '
                'messages=[{"role": "user", "content": "Hello!"}])',
                "",
            ]
        ),
        markup=False,
        highlight=False,
    )


DEMO_PROMPTS = [
    ("simple_query", "What is the capital of France?"),
    ("normal", "Summarize the main trade-offs between SQL and NoSQL databases for a startup."),
    (
        "code",
        "Design a distributed rate limiter. Analyze the trade-offs, then write the Python code:\n"
        "```python\nclass RateLimiter:\n    ...\n```\nand prove it is correct under concurrency, step by step.",
    ),
]


async def _demo(settings: Settings, gateway_url: str) -> None:
    """Three requests through the gateway with the OpenAI SDK (routed, called, costed), a rating
    each, then what budget-enforcer and metrics know of them."""
    import httpx
    from openai import AsyncOpenAI

    from routewise.client import RoutewiseClient
    from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
    from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary

    org = f"demo-{uuid.uuid4().hex[:6]}"  # this run's totals only, even on data kept from earlier runs
    key = await _development_key(settings, org)
    table = Table(title="Demo: three requests through the gateway (OpenAI SDK)", title_justify="left")
    for col in ("task", "type", "model", "tier", "strategy", "tokens in/out", "cost $"):
        table.add_column(col)
    async with (
        AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client,
        httpx.AsyncClient(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        for task_type, prompt in DEMO_PROMPTS:
            raw = await client.chat.completions.with_raw_response.create(
                model="routewise/auto",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=400,
                extra_headers={"X-Routewise-Task-Type": task_type},
            )
            answer, headers = raw.parse(), raw.headers
            task_id = headers["x-routewise-task-id"]
            usage = answer.usage
            table.add_row(
                task_id[:8],
                task_type,
                answer.model,
                headers.get("x-routewise-tier", ""),
                headers.get("x-routewise-strategy", ""),
                f"{usage.prompt_tokens}/{usage.completion_tokens}" if usage else "",
                headers.get("x-routewise-cost-usd", ""),
            )
            rated = await http.post("/v1/feedback", json={"task_id": task_id, "quality": 0.9})
            rated.raise_for_status()
    console.print(table)
    async with RoutewiseClient(settings) as rw:
        budget = summary = None
        for _ in range(100):  # costs and ratings are events: give the consumers a moment
            budget = await rw.request(
                settings.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
            )
            summary = await rw.request(settings.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            if budget.costs_recorded >= 3 and summary.costs_recorded >= 3 and summary.selected + summary.rejected >= 3:
                break
            await asyncio.sleep(0.1)
        assert budget is not None and summary is not None
        console.print(
            f"budget-enforcer: org [bold]{org}[/] has spent ${budget.spent_usd:.6f} over {budget.costs_recorded} calls"
        )
        console.print(
            f"metrics: {summary.selected} selected, {summary.rejected} rejected;"
            f" estimated ${summary.estimated_cost_usd:.6f} vs baseline ${summary.baseline_cost_usd:.6f};"
            f" actual ${summary.actual_cost_usd:.6f}"
        )
