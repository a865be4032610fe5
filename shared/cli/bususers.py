"""``routewise bus-user …``: NATS credentials for an org's applications (tenants).

A tenant's user may publish only its org's tasks, costs and feedback and subscribe only to its
org's decisions, refusals and budget alerts (``routewise.runtime.bus_users``). The user is written
to the server's ``users.conf`` (a running ``routewise dev``'s by default, or ``--users-file``, e.g.
compose's ``deploy/nats/users.conf``) with its password hashed (bcrypt), and the server is told
to reload it: at once for ``routewise dev``; for another server, the command says how.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from routewise.cli.common import JsonOpt, app, build, console, fail, table
from routewise.client.discovery import read_dev_state
from routewise.client.urls import url_without_password
from routewise.contracts.events import Scope
from routewise.runtime.bus_users import (
    entry_user,
    new_password,
    read_users_file,
    tenant,
    tenant_user,
    with_user,
    without_user,
)
from routewise.runtime.settings import Settings, inbox_prefix

bus_app = typer.Typer(help="NATS users for an org's applications (tenants).", no_args_is_help=True)
app.add_typer(bus_app, name="bus-user")

UsersFileOpt = Annotated[
    Path | None,
    typer.Option("--users-file", help="The NATS server's users.conf [default: the running `routewise dev`'s]."),
]


def _target(users_file: Path | None, as_json: bool) -> tuple[Path, dict[str, Any] | None]:
    """The users.conf to change, and the running `routewise dev` it belongs to (if it is that one)."""
    state = read_dev_state()
    if users_file is not None:
        mine = state is not None and Path(state.get("nats_users_file", "")) == users_file.resolve()
        return users_file, state if mine else None
    if state is None or not state.get("nats_users_file"):
        raise fail("no `routewise dev` is running: say which server's users.conf with --users-file", as_json)
    return Path(state["nats_users_file"]), state


def _reload(state: dict[str, Any] | None) -> str:
    """Tell the server to read its users again; what was done, or what the operator must do."""
    pid = (state or {}).get("nats_pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, signal.SIGHUP)
            return "the running `routewise dev` NATS server has reloaded its users"
        except OSError:
            pass
    return "reload the server to apply it: `nats-server --signal reload` (compose: `docker compose kill -s HUP nats`)"


@bus_app.command("create")
def create(
    org: Annotated[str, typer.Option("--org", help="The org whose applications connect with it.")],
    users_file: UsersFileOpt = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="The deployment's namespace [default: $ROUTEWISE_NAMESPACE].")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create (or renew) the NATS user of ORG's applications and print its password: the only
    time it is shown. Renewing replaces the old password."""
    import bcrypt

    org_id = build(Scope, as_json, org_id=org).org_id
    path, state = _target(users_file, as_json)
    namespace = namespace or (state or {}).get("namespace") or Settings().namespace
    password = new_password()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(11)).decode()
    try:
        text = path.read_text()
        path.write_text(with_user(text, tenant(org_id, hashed, namespace)))
    except OSError as exc:
        raise fail(f"cannot update {path}: {exc}", as_json) from None
    reloaded = _reload(state)
    user = tenant_user(org_id)
    nats_url = url_without_password(state["nats_url"]) if state else "nats://<host>:4222"
    if as_json:
        print(json.dumps({"user": user, "password": password, "org_id": org_id, "users_file": str(path)}))
        return
    rows = [["user", user], ["password", password], ["org", org_id], ["users file", str(path)]]
    console.print(table("NATS user created (the password is shown this once)", ["", ""], rows))
    console.print(reloaded)
    console.print("The org's applications connect with (the SDK and the CLI read these):")
    console.print(
        f"  export ROUTEWISE_NATS_URL={nats_url} ROUTEWISE_NATS_USER={user} ROUTEWISE_NATS_PASSWORD={password}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"  (replies come on {inbox_prefix(user)}.>, the only inbox it may read)", highlight=False)


@bus_app.command("list")
def list_users(users_file: UsersFileOpt = None, as_json: JsonOpt = False) -> None:
    """The users of the server: the operator, the services and the tenants."""
    path, _ = _target(users_file, as_json)
    try:
        names = [entry_user(line) for line in read_users_file(path.read_text())]
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc}", as_json) from None
    if as_json:
        print(json.dumps({"users": names}))
        return
    console.print(table(f"NATS users ({path})", ["user"], [[n] for n in names]))


@bus_app.command("remove")
def remove(
    org: Annotated[str, typer.Option("--org", help="The org whose applications' user goes.")],
    users_file: UsersFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove ORG's applications' user: they can no longer connect (connected ones are cut off)."""
    user = tenant_user(build(Scope, as_json, org_id=org).org_id)
    path, state = _target(users_file, as_json)
    try:
        text = path.read_text()
        if user not in [entry_user(line) for line in read_users_file(text)]:
            raise fail(f"{path} has no user {user}", as_json, "not_found")
        path.write_text(without_user(text, user))
    except OSError as exc:
        raise fail(f"cannot update {path}: {exc}", as_json) from None
    reloaded = _reload(state)
    if as_json:
        print(json.dumps({"removed": user}))
        return
    console.print(f"removed {user}; {reloaded}")
