"""``routewise keys …``: API keys for the gateway (its OpenAI-compatible HTTP API)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from routewise.cli.common import JsonOpt, NatsUrlOpt, app, ask, build, console, err_console, fail, table, who_am_i
from routewise.contracts.gateway import (
    CreateKey,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyRevoked,
    ListKeys,
    RevokeKey,
    Role,
)

keys_app = typer.Typer(help="API keys for the gateway: each charges its scope.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

ActorOpt = Annotated[str | None, typer.Option("--by", help="Who is changing it [default: user@host].")]
_KEY_ID = re.compile(r"(?:rw_)?([0-9a-f]{16})(?:_.*)?")


def _when(value: datetime | None) -> str | None:
    return None if value is None else f"{value:%Y-%m-%d %H:%M}"


def _status(key: KeyInfo) -> str:
    """Revoked (when), or in use (last used, to the minute)."""
    if key.revoked_at is not None:
        return f"revoked {_when(key.revoked_at)}"
    return f"last used {_when(key.last_used_at)}" if key.last_used_at else "never used"


@keys_app.command("create")
def create(
    scope: Annotated[
        str,
        typer.Option(
            "--scope",
            help="Who the key's calls are charged to: org:ID[/team:ID][/user:ID], e.g. org:acme/team:platform.",
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="A name to recognise it by.")] = None,
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="admin: manage the scope (budgets, approvals, extensions, tier preferences, keys) and all a member"
            " may; member: route tasks, record feedback, read the scope; viewer: read only.",
        ),
    ] = Role.member,
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it: the only time it is shown."""
    request = build(CreateKey, as_json, scope=scope, name=name, role=role, actor=actor or who_am_i())
    created = ask(nats_url, lambda s: s.keys_create, request, KeyCreated, as_json)
    if as_json:
        print(created.model_dump_json())
        return
    console.print(
        table(
            "API key created",
            ["", ""],
            [
                ["id", created.id],
                ["scope", created.scope],
                ["role", created.role.value],
                ["name", created.name],
                ["created by", created.created_by],
            ],
        )
    )
    print(created.key)  # plain, alone on its line: nothing wraps or styles it
    err_console.print(
        "Store this key now: it is not shown again (only its hash is kept). "
        "Send it as 'Authorization: Bearer <key>'; revoke it with `routewise keys revoke " + created.id + "`.",
        soft_wrap=True,
    )


@keys_app.command("list")
def list_keys(
    org: Annotated[str | None, typer.Option("--org", help="Only this org's keys.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Leave out revoked keys.")] = False,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys, newest first (never their secrets)."""
    request = build(ListKeys, as_json, org=org, include_revoked=not active)
    result = ask(nats_url, lambda s: s.keys_list, request, KeyList, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    if not result.keys:
        console.print("no API keys")
        return
    listed = Table(title="API keys (UTC)", title_justify="left")
    listed.add_column("key", no_wrap=True)  # rw_<id>_…: what `keys revoke` takes
    listed.add_column("scope", overflow="fold")
    listed.add_column("role", no_wrap=True)
    listed.add_column("name", overflow="fold")
    listed.add_column("created", no_wrap=True)
    listed.add_column("status", overflow="fold")
    for k in result.keys:
        row = [k.prefix, k.scope, k.role.value, k.name or "—", f"{k.created_at:%Y-%m-%d}", _status(k)]
        listed.add_row(*[escape(v) for v in row])
    console.print(listed)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="ID", help="The key's id: 16 hex digits, or rw_<id>_… as `keys list` shows it.")
    ],
    actor: ActorOpt = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: calls with it are refused (401) within 5 seconds."""
    match = _KEY_ID.fullmatch(key_id.strip())
    if match is None:
        message = f"a key's id is 16 hex digits (rw_<id>_… in `routewise keys list`), not {key_id[:40]!r}"
        raise fail(message, as_json, "invalid_request")
    request = build(RevokeKey, as_json, id=match.group(1), actor=actor or who_am_i())
    result = ask(nats_url, lambda s: s.keys_revoke, request, KeyRevoked, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    key = result.key
    if result.already_revoked:
        console.print(f"key {key.prefix} ({_what(key)}) was already revoked on {_when(key.revoked_at)} UTC")
    else:
        console.print(f"revoked key {key.prefix} ({_what(key)}): calls with it are refused (within 5 s)")


def _what(key: KeyInfo) -> str:
    return escape(f"{key.name}, {key.scope}" if key.name else key.scope)
