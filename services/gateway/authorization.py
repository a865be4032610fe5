"""Who may do what over HTTP: every rule about keys, roles and scopes, in one place, free of I/O.

A key has a scope (an org, a team in it, a user in it — ``org:acme/team:platform``) and a role:

- ``viewer`` reads: its scope, and what is every org's (prices, policies, model statistics);
- ``member`` also routes tasks (chat completions, ``/complete``) and records feedback;
- ``admin`` also manages its scope: budgets, approvals, extensions, tier preferences, keys.

What is every org's (prices, routing policies) is changed over HTTP only by an org-wide admin
key of an operator org (``ROUTEWISE_OPERATOR_ORGS``; none by default: the CLI on the bus is the
operator).

A key never reads or changes anything outside its scope. An org key holds its whole org (its
teams, users and workspaces); a team key holds its team alone (a budget on one of its users names
no team, so it is not the team's); a user key holds its user alone. A task's scope (org, team,
user) is within a key when it matches the key at every level the key names. A workspace belongs to
its org: only org keys reach its preferences.

Refusals: a role that may not do an action, or a scope named outside the key's, is 403
``forbidden``; something found by its id (a budget, a task, a key) outside the key's scope is 404,
exactly as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from routewise.contracts.api import Action
from routewise.contracts.events import scope_parts
from routewise.contracts.gateway import Role


class Holder(Protocol):
    """A scope: a key's or a task's (``KeyScope``, ``Scope``)."""

    @property
    def org_id(self) -> str: ...
    @property
    def team_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...


class Key(Holder, Protocol):
    @property
    def role(self) -> Role: ...


ROLES: Mapping[Action, frozenset[Role]] = {
    Action.read: frozenset(Role),
    Action.read_global: frozenset(Role),
    Action.route: frozenset({Role.member, Role.admin}),
    Action.manage: frozenset({Role.admin}),
    Action.operate: frozenset({Role.admin}),
}
"""The roles that may take each action (``operate`` also needs an operator org's org-wide key)."""

_DOING = {
    Action.read: "read",
    Action.read_global: "read",
    Action.route: "route tasks or record feedback",
    Action.manage: "manage budgets, approvals, extensions, tier preferences or keys",
    Action.operate: "change what every org shares (prices, routing policies)",
}


class Denied(Exception):
    """A refusal: HTTP status (403 or 404), error code and a message that says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def forbidden(message: str) -> Denied:
    return Denied(403, "forbidden", message)


def not_found(what: str) -> Denied:
    """Something outside the key's scope, answered as if it did not exist."""
    return Denied(404, "not_found", f"no {what}")


def is_operator(key: Key, operator_orgs: Collection[str]) -> bool:
    return key.role is Role.admin and key.team_id is None and key.user_id is None and key.org_id in operator_orgs


def permit(key: Key, action: Action, operator_orgs: Collection[str] = ()) -> None:
    """Whether the key's role may take ``action``; ``Denied`` (403) saying what it would need."""
    if action is Action.operate:
        if not is_operator(key, operator_orgs):
            raise forbidden(
                f"a {key.role.value} key of {text(key)} may not {_DOING[action]}: that needs an org-wide admin key"
                " of an operator org (ROUTEWISE_OPERATOR_ORGS), or the CLI on the bus"
            )
        return
    if key.role not in ROLES[action]:
        needed = " or ".join(r.value for r in Role if r in ROLES[action])
        raise forbidden(f"a {key.role.value} key may not {_DOING[action]}: that needs the role {needed}")


def text(scope: Holder) -> str:
    """``org:ID[/team:ID][/user:ID]``, as keys are written."""
    out = f"org:{scope.org_id}"
    if scope.team_id:
        out += f"/team:{scope.team_id}"
    if scope.user_id:
        out += f"/user:{scope.user_id}"
    return out


def own_scope(key: Holder) -> tuple[str, str]:
    """The key's scope as a (scope_type, scope_id) a budget or a report names: its narrowest level."""
    if key.user_id:
        return "user", f"{key.org_id}/{key.user_id}"
    if key.team_id:
        return "team", f"{key.org_id}/{key.team_id}"
    return "org", key.org_id


def holds(key: Holder, scope_type: str, scope_id: str) -> bool:
    """Whether the scope (``team``, ``acme/platform``) is within the key's."""
    try:
        org, local = scope_parts(scope_type, scope_id)
    except ValueError:
        return False
    if org != key.org_id:
        return False
    if key.team_id is None and key.user_id is None:
        return True
    return (scope_type, scope_id) == own_scope(key) and local is not None


def holds_task(key: Holder, scope: Holder) -> bool:
    """Whether a task's scope (or a new key's) is within the key's: the same org, and the same
    team and user wherever the key names one."""
    return (
        scope.org_id == key.org_id
        and (key.team_id is None or scope.team_id == key.team_id)
        and (key.user_id is None or scope.user_id == key.user_id)
    )


def require(key: Holder, scope_type: str, scope_id: str) -> None:
    """``Denied`` (403) when a scope the request names is outside the key's."""
    if not holds(key, scope_type, scope_id):
        raise forbidden(f"{scope_type}:{scope_id} is outside this key's scope ({text(key)})")


def require_task(key: Holder, scope: Holder) -> None:
    """``Denied`` (403) when a task's scope the request names is outside the key's."""
    if not holds_task(key, scope):
        raise forbidden(f"{text(scope)} is outside this key's scope ({text(key)})")


def require_org(key: Holder, org_id: str | None) -> None:
    """``Denied`` (403) when a request's org filter names another org."""
    if org_id is not None and org_id != key.org_id:
        raise forbidden(f"org {org_id} is outside this key's scope ({text(key)})")
