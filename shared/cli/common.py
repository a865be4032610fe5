"""What every ``routewise`` command shares: the app, finding the bus (or the gateway), output and errors.

A command asks a service with ``ask``: on the bus, as an operator, by default; through the gateway's
management API, with an API key, when ``ROUTEWISE_API_URL`` (``routewise --api-url URL``) is set —
the route of each request is the one the gateway serves (``routewise.contracts.api.ROUTES``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from routewise.client.discovery import resolve_settings
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.subjects import Subjects

app = typer.Typer(
    name="routewise",
    help="Cost-aware routing of LLM tasks over NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "[default: …]" must stay visible
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help="NATS URL [default: $ROUTEWISE_NATS_URL, else `routewise dev`'s, else nats://127.0.0.1:4222]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


# ------------------------------------------------------------------ where things are


@dataclass(frozen=True)
class Gateway:
    """The gateway the commands talk to instead of the bus (``--api-url``), and the key they send."""

    url: str
    key: str | None


GATEWAY: list[Gateway] = []
"""This invocation's gateway, when one is set (one element at most)."""


@app.callback()
def _where(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="ROUTEWISE_API_URL",
            help="Talk to the gateway's management API at this URL, with an API key, instead of to the bus as an"
            " operator (e.g. http://localhost:8000).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="ROUTEWISE_API_KEY", help="The API key sent to --api-url (rw_…)."),
    ] = None,
) -> None:
    """Cost-aware routing of LLM tasks over NATS JetStream."""
    GATEWAY.clear()
    if api_url:
        GATEWAY.append(Gateway(api_url.rstrip("/"), api_key))


def gateway() -> Gateway | None:
    return GATEWAY[0] if GATEWAY else None


def bus_only(command: str, as_json: bool) -> None:
    """Stop a command that has no HTTP route when the commands talk to the gateway."""
    if gateway() is not None:
        raise fail(
            f"{command} talks to the bus only (the management API has no route for it): unset ROUTEWISE_API_URL"
            " (or leave out --api-url) to run it as an operator on the bus",
            as_json,
            "no_http_route",
        )


# ------------------------------------------------------------------ output helpers


def fail(message: str, as_json: bool, code: str = "error") -> typer.Exit:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    else:
        err_console.print(f"[bold red]error[/]: {escape(message)}")
    return typer.Exit(1)


def run_async(coro_fn: Callable[[], Awaitable[T]], as_json: bool) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except RoutewiseError as exc:
        raise fail(exc.message, as_json, exc.code) from None
    except ValidationError as exc:  # a value a contract refuses (e.g. a cost with 13 decimal places)
        raise fail(first_error(exc), as_json, "invalid_request") from None


def emit(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(data, default=str, ensure_ascii=False))
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, "—" if value is None else escape(str(value)))
    console.print(table)


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


M = TypeVar("M", bound=BaseModel)


def build(cls: type[M], as_json: bool, /, **fields: Any) -> M:
    """A request or event from command-line values; a bad value is a clear error, not a traceback."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise fail(first_error(exc), as_json, "invalid_request") from None


def ask(
    nats_url: str | None, subject: Callable[[Subjects], str], payload: BaseModel, reply: type[M], as_json: bool
) -> M:
    """One request/reply to a service, with the bus found as every command finds it; through the
    gateway's route for it when a gateway is set (``--api-url``)."""
    if (where := gateway()) is not None:
        return ask_http(where, payload, reply, as_json)
    from routewise.client import RoutewiseClient

    settings = resolve_settings(nats_url)

    async def go() -> M:
        async with RoutewiseClient(settings) as rw:
            return await rw.request(subject(settings.subjects), payload, reply)

    return run_async(go, as_json)


def ask_http(where: Gateway, payload: BaseModel, reply: type[M], as_json: bool) -> M:
    """The request sent to the gateway's route for it, with the key; its error, as the gateway said it."""
    import httpx

    from routewise.contracts.api import route_for, to_http

    route = route_for(type(payload), reply)
    if route is None:
        raise fail(
            f"the management API has no route for {type(payload).__name__}: this command talks to the bus only;"
            " unset ROUTEWISE_API_URL (or leave out --api-url) to run it as an operator",
            as_json,
            "no_http_route",
        )
    if not where.key:
        raise fail("no API key for the gateway: set ROUTEWISE_API_KEY or give --api-key", as_json, "invalid_api_key")
    call = to_http(route, payload)
    try:
        with httpx.Client(base_url=where.url, timeout=60) as client:
            response = client.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                headers={"Authorization": f"Bearer {where.key}"},
            )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the gateway at {where.url}: {exc}", as_json, "unavailable") from None
    if response.is_success:
        try:
            return reply.model_validate_json(response.content)
        except ValidationError as exc:
            raise fail(
                f"the gateway's answer is not a {reply.__name__}: {first_error(exc)}", as_json, "internal"
            ) from None
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), str(error.get("code") or "error")
    except (ValueError, KeyError, TypeError):
        message, code = response.text[:500] or response.reason_phrase, "error"
    raise fail(f"{message} (HTTP {response.status_code})", as_json, code)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        out.add_column(column, no_wrap=i == 0)  # the first column names the row: keep it whole
    for row in rows:  # cells are data: never read as rich markup ("[factual]" stays visible)
        out.add_row(*["—" if v is None else escape(str(v)) for v in row])
    return out


def usd_option(value: str | None, option: str, as_json: bool, *, what: str = "an amount of USD") -> Decimal | None:
    """A USD amount given on the command line (None stays None); a bad one is a clear error."""
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise fail(f"{option} must be {what}, not {value!r}", as_json, "invalid_request") from None


def csv_list(value: str | None) -> list[str] | None:
    """A comma-separated option as a list ("" is an empty list, None stays None)."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def who_am_i() -> str:
    """user@host: who an admin change is attributed to when --by is not given."""
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"
