"""Who may do what on the bus: NATS users and their permissions, derived from the services' tables.

Four kinds of user connect to NATS:

- **a service** (``selector``, ``gateway`` …): publishes only the events its table says it
  publishes (``Service.publishes``), the requests and notices it sends (``Service.asks``) and its
  dead letters; subscribes only to the requests and notices it answers, the decisions it listens
  to (``Service.listens``) and its own inbox (``_INBOX_<user>``); answers any request it receives
  (``allow_responses``); uses the JetStream API but may not delete a stream;
- **the operator** (the CLI, ``routewise dev``'s demo): every permission;
- **a tenant** (an application of one org, ``routewise bus-user create --org ID``): publishes
  its org's tasks, reported costs and feedback, subscribes to its org's decisions, costs (recorded,
  refused, adjusted) and budget alerts and its own inbox, nothing else — no JetStream API, no
  request to any service.

``users_file`` renders them as a nats-server ``users.conf`` (included by the server's config, see
``AUTHORIZATION``); ``routewise dev``, the test servers and ``deploy/nats/users.conf``
(``python -m routewise.runtime.bus_users``) are rendered from here, so permissions are defined once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from routewise.client.urls import url_without_password
from routewise.contracts.events import (
    BudgetAlert,
    CostAdjusted,
    CostRecorded,
    CostRefused,
    CostReported,
    FeedbackRecorded,
    ModelSelected,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.subjects import SERVICES, Subjects, durable, subject_token
from routewise.runtime.settings import Settings, inbox_prefix

OPERATOR = "operator"
TENANT_PREFIX = "org_"
ANY_NAMESPACE = "*"
"""Render for every namespace at once (the test servers: each test has its own namespace)."""

JS_DENIED = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>")
"""Never a service's, whatever else it is allowed: deleting or emptying a stream."""


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    deny_publish: tuple[str, ...] = ()
    allow_responses: bool = False


@dataclass(frozen=True)
class BusUser:
    """A NATS user; ``permissions`` None: every permission (the operator)."""

    name: str
    password: str
    permissions: Permissions | None = None
    comment: str = ""


def tenant_user(org_id: str) -> str:
    """The NATS user name of an org's applications (``org_acme``)."""
    return f"{TENANT_PREFIX}{subject_token(org_id)}"


def service_permissions(name: str, subjects: Subjects) -> Permissions:
    """What service ``name`` may do: read from its table (``routewise.services.<name>.app``)."""
    from routewise.runtime.inprocess import service  # the services' tables (server side only)

    table = service(name)
    publish = [subjects.dead_letter(name), *_jetstream(name, table, subjects)]
    publish += [f"$KV.{getattr(subjects, bucket)}.>" for bucket in table.writes_kv]
    publish += [subjects.of(event_type) for event_type in table.publishes]
    publish += [getattr(subjects, asked) for asked in table.asks]
    subscribe = [f"{inbox_prefix(name)}.>"]
    subscribe += [getattr(subjects, answered) for answered in (*table.requests, *table.notices)]
    subscribe += [subjects.of(event_type) for event_type in table.listens]
    return Permissions(tuple(publish), tuple(subscribe), JS_DENIED, allow_responses=bool(table.requests))


def _jetstream(name: str, table: Any, subjects: Subjects) -> list[str]:
    """The JetStream API a service needs: its streams kept up to date (never read, purged or
    deleted), its own durable consumers (and acks), the key-value buckets it reads or writes."""
    api = "$JS.API"
    allowed = [f"{api}.INFO", f"{api}.STREAM.NAMES", f"{api}.STREAM.LIST", f"{api}.STREAM.INFO.*", "$JS.FC.>"]
    for kept in subjects.streams:
        allowed += [f"{api}.STREAM.CREATE.{kept.name}", f"{api}.STREAM.UPDATE.{kept.name}"]
    for event_type in table.events:
        pattern = subjects.of(event_type)
        stream, consumer = subjects.stream_for(pattern).name, durable(name, pattern)
        allowed += [
            f"{api}.CONSUMER.CREATE.{stream}.{consumer}",
            f"{api}.CONSUMER.CREATE.{stream}.{consumer}.>",
            f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
            f"{api}.CONSUMER.INFO.{stream}.{consumer}",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
        ]
    for bucket in dict.fromkeys((*table.reads_kv, *table.writes_kv)):
        kv = f"KV_{getattr(subjects, bucket)}"
        allowed += [
            f"{api}.STREAM.CREATE.{kv}",
            f"{api}.STREAM.MSG.GET.{kv}",
            f"{api}.DIRECT.GET.{kv}.>",
            f"{api}.CONSUMER.CREATE.{kv}",
            f"{api}.CONSUMER.CREATE.{kv}.>",
            f"{api}.CONSUMER.INFO.{kv}.*",
            f"{api}.CONSUMER.DELETE.{kv}.*",
        ]
    return allowed


def tenant_permissions(org_id: str, subjects: Subjects) -> Permissions:
    """An org's applications: their own org's subjects, nothing else."""
    publish = [subjects.for_org(name, org_id) for name in TENANT_PUBLISHES]
    subscribe = [subjects.for_org(name, org_id) for name in TENANT_SUBSCRIBES]
    subscribe += [subjects.org_alerts(org_id), f"{inbox_prefix(tenant_user(org_id))}.>"]
    return Permissions(tuple(publish), tuple(subscribe))


TENANT_PUBLISHES = (TaskArrived.SUBJECT, CostReported.SUBJECT, FeedbackRecorded.SUBJECT)
"""An org's applications send tasks, what calls cost (checked by cost-predictor) and feedback."""
TENANT_SUBSCRIBES = (
    ModelSelected.SUBJECT,
    TaskRejected.SUBJECT,
    CostRecorded.SUBJECT,
    CostRefused.SUBJECT,
    CostAdjusted.SUBJECT,
)
"""…and hear its decisions, refusals, accepted, refused and corrected costs (and its budget alerts)."""
assert BudgetAlert.SUBJECT == "budget_alerts"  # subscribed to as org_alerts


def new_password() -> str:
    return secrets.token_urlsafe(24)


def service_users(operator_password: str, namespace: str = ANY_NAMESPACE) -> list[BusUser]:
    """The operator and one user per service, whose password is derived from the operator's
    (``derived_password``): what a development stack and the test servers run with."""
    subjects = Subjects(namespace)
    users = [BusUser(OPERATOR, operator_password, None, "the CLI: every permission")]
    users += [
        BusUser(
            name,
            derived_password(operator_password, name),
            service_permissions(name, subjects),
            f"the {name} service",
        )
        for name in SERVICES
    ]
    return users


def derived_password(operator_password: str, service: str) -> str:
    """A service's password on a development or test server: whoever holds the operator's password
    (every permission already) can derive it; nobody else can."""
    return hmac.new(operator_password.encode(), f"routewise-bus-user:{service}".encode(), hashlib.sha256).hexdigest()


def operator_url(url: str, password: str) -> str:
    """``nats://operator:<password>@host:port``: how the CLI and tests reach a locked server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{OPERATOR}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"))


def service_login(nats_url: str, service: str) -> dict[str, str] | None:
    """How ``service`` connects, given the operator's URL (``operator_url``: a development stack or
    a test server): the URL without the operator's credentials, its own user and derived password
    (as ``ROUTEWISE_*`` settings). None: the URL is no operator's (a server without authentication,
    or the service's own ``ROUTEWISE_NATS_USER`` applies)."""
    parts = urlsplit(nats_url)
    if parts.username != OPERATOR or not parts.password:
        return None
    password = derived_password(unquote(parts.password), service)
    return {"nats_url": url_without_password(nats_url), "nats_user": service, "nats_password": password}


def as_service(settings: Settings, service: str) -> Settings:
    """The settings ``service`` connects with (``service_login``), its own user whatever URL it is given."""
    login = None if settings.nats_user else service_login(settings.nats_url, service)
    return settings if login is None else settings.model_copy(update=login)


def tenant(org_id: str, password: str, namespace: str = ANY_NAMESPACE) -> BusUser:
    return BusUser(
        tenant_user(org_id), password, tenant_permissions(org_id, Subjects(namespace)), f"applications of org {org_id}"
    )


# ------------------------------------------------------------------ rendering

AUTHORIZATION = 'authorization {\n  include "users.conf"  # routewise.runtime.bus_users\n}\n'
"""What a nats-server config needs to authenticate Routewise's users: ``users.conf`` beside it."""


def users_file(users: Iterable[BusUser]) -> str:
    """``users.conf``: one user per line (``routewise bus-user create`` rewrites it, keeping the others)."""
    return _users_conf(map(user_entry, users))


def _users_conf(lines: Iterable[str]) -> str:
    return "users = [\n" + "".join(f"  {line}\n" for line in lines) + "]\n"


def user_entry(user: BusUser) -> str:
    """One user as a nats-server config map on one line (JSON is nats-server config; a password
    ``$NAME`` is an environment variable, left unquoted)."""
    entry: dict[str, Any] = {"user": user.name, "password": user.password}
    if user.permissions is not None:
        entry["permissions"] = _permissions(user.permissions)
    text = json.dumps(entry)
    if re.fullmatch(r"\$[A-Z_]+", user.password):
        text = text.replace(json.dumps(user.password), user.password)
    return f"{text}  # {user.comment}" if user.comment else text


def read_users_file(text: str) -> list[str]:
    """The entry lines of a ``users.conf`` (as ``users_file`` writes them), each as it is."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith("{")]


def entry_user(line: str) -> str | None:
    match = re.match(r'\{"user": ("(?:[^"\\]|\\.)*")', line)
    return json.loads(match.group(1)) if match else None


def with_user(text: str, user: BusUser) -> str:
    """``users.conf`` with ``user`` added, or replacing the entry of the same name."""
    return _users_conf([*read_users_file(without_user(text, user.name)), user_entry(user)])


def without_user(text: str, name: str) -> str:
    """``users.conf`` without the user ``name`` (as it was if it had none)."""
    return _users_conf(line for line in read_users_file(text) if entry_user(line) != name)


def with_tenants_of(text: str, users: Iterable[BusUser]) -> str:
    """``users.conf`` of ``users``, keeping the tenants ``text`` (an earlier one) had."""
    tenants = [line for line in read_users_file(text) if (entry_user(line) or "").startswith(TENANT_PREFIX)]
    return _users_conf([*map(user_entry, users), *tenants])


def _permissions(p: Permissions) -> dict[str, Any]:
    out: dict[str, Any] = {
        "publish": {"allow": _wild(p.publish), **({"deny": list(p.deny_publish)} if p.deny_publish else {})},
        "subscribe": {"allow": _wild(p.subscribe)},
    }
    if p.allow_responses:
        out["allow_responses"] = True
    return out


def _wild(subjects: Sequence[str]) -> list[str]:
    """Subjects of the ``*`` namespace: a token that names a stream or bucket of it (``*_EVENTS``,
    ``KV_*_MODEL_CATALOG``) becomes ``*``."""
    wild = (".".join("*" if "*" in t else t for t in s.split(".")) for s in subjects)
    return list(dict.fromkeys(wild))


def compose_users(namespace: str = "routewise") -> str:
    """``deploy/nats/users.conf``: the operator and the services, passwords from the environment
    (``$NATS_SELECTOR_PASSWORD`` …, see docker-compose.yml)."""
    users = [
        BusUser(u.name, f"$NATS_{u.name.upper()}_PASSWORD", u.permissions, u.comment)
        for u in service_users("", namespace)
    ]
    return COMPOSE_HEADER + users_file(users)


COMPOSE_HEADER = """# Rendered by `python -m routewise.runtime.bus_users > deploy/nats/users.conf` (CI checks it):
# one user per service that may do only its job, and the operator (the CLI). Tenants are added by
# `routewise bus-user create --org ID --users-file deploy/nats/users.conf`.
"""


def main(argv: Sequence[str]) -> int:
    """Print deploy/nats/users.conf; ``--check``: fail when the repository's differs (tenants aside)."""
    from pathlib import Path

    text = compose_users()
    path = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "users.conf"
    if "--check" in argv:
        mine = (
            [
                line
                for line in read_users_file(path.read_text())
                if not (entry_user(line) or "").startswith(TENANT_PREFIX)
            ]
            if path.is_file()
            else []
        )
        if mine != read_users_file(text):
            print(f"{path} is out of date: python -m routewise.runtime.bus_users > {path}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
