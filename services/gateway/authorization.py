"""Who may do what over HTTP: every rule about keys, roles and scopes, in one place, free of I/O.

A key has a scope (an org, a team in it, a user in it — ``org:acme/team:platform``) and a role:

- ``viewer`` reads: its scope, and what is every org's (prices, policies, model statistics);
- ``member`` also routes tasks (chat completions, ``/complete``) and records feedback;
- ``admin`` also manages its scope: budgets, approvals, extensions, tier preferences, keys.

What is every org's (prices, routing policies) is changed over HTTP only by an org-wide admin
key of an operator org (``ROUTEWISE_OPERATOR_ORGS``; none by default: the CLI on the bus is the
operator). A cost adjustment, which moves spend on every budget of its task's chain (the org's
included), needs an org-wide admin key.

A key never reads or changes anything outside its scope. Two rules, both ``Scope``'s:

- what is kept on one scope (a budget, its alerts and audit, a report) is within a key when the
  key's scope ``holds`` it: an org key holds its whole org (its teams, users and workspaces); a team
  key its team alone (not a budget of one of its users: ``user:acme/ana`` names no team, it is the
  user's across the org); a user key its user alone;
- a task found by its id (to rate, approve or adjust), a key listed or revoked, is within a key
  when the key's scope ``contains`` the task's: every id the key names is the same in it.

A scope a request *names* (a task's ``scope`` to preview or estimate, a new key's scope) is held to
more: within the key, and, unless the key is org-wide, the key's own scope exactly — a team key
names no user or workspace, a user key no team or workspace (the task would read or charge budgets
the key does not hold). A chat completion's OpenAI ``user`` is the one way a key without a user
charges one (``KeyScope.task_scope``): the spend counts on that user's budgets as it does on the
key's own, but the key reads none of them. So a key naming a user is made only by an org-wide admin
key or by a key of exactly that scope (or by the operator's CLI) — the keys that hold the user's
budgets (``user:ORG/ID``) — and a new key's role is no higher than its maker's.

An approval lifts only the approval gates of the budgets the approving key holds (budget-enforcer
keeps the key's scope with it, and refuses one while a gate in force on the task's chain is outside
it): a team admin approves past its team's gate, not the org's.

Refusals: a role that may not do an action, or a scope named outside the key's, is 403
``forbidden``; something found by its id (a budget, a task, a key) outside the key's scope is 404,
exactly as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from routewise.contracts.api import Action
from routewise.contracts.events import Scope
from routewise.contracts.gateway import Role


class Holder(Protocol):
    """A key's scope: an org, and optionally a team and a user in it (``KeyScope``)."""

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
    Action.manage_org: frozenset({Role.admin}),
    Action.operate: frozenset({Role.admin}),
}
"""The roles that may take each action (``manage_org`` also needs an org-wide key, ``operate`` an
operator org's org-wide key)."""

RANK: Mapping[Role, int] = {Role.viewer: 0, Role.member: 1, Role.admin: 2}
"""Roles from the least to the most a key may do: a key makes keys of its rank or below."""

_DOING = {
    Action.read: "read",
    Action.read_global: "read",
    Action.route: "route tasks or record feedback",
    Action.manage: "manage budgets, approvals, extensions, tier preferences or keys",
    Action.manage_org: "adjust recorded costs",
    Action.operate: "change what every org shares (prices, routing policies)",
}


class Denied(Exception):
    """A refusal: HTTP status (403 or 404), error code and a message that says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def a(role: Role) -> str:
    """``an admin``, ``a member``, ``a viewer``."""
    return f"{'an' if role is Role.admin else 'a'} {role.value}"


def forbidden(message: str) -> Denied:
    return Denied(403, "forbidden", message)


def not_found(what: str) -> Denied:
    """Something outside the key's scope, answered as if it did not exist."""
    return Denied(404, "not_found", f"no {what}")


def scope_of(key: Holder) -> Scope:
    """The key's scope as a ``Scope`` (whose ``holds`` and ``contains`` are the rules)."""
    if isinstance(key, Scope):
        return key
    return Scope(org_id=key.org_id, team_id=key.team_id, user_id=key.user_id)


def org_wide(key: Holder) -> bool:
    return key.team_id is None and key.user_id is None


def is_operator(key: Key, operator_orgs: Collection[str]) -> bool:
    return key.role is Role.admin and org_wide(key) and key.org_id in operator_orgs


def permit(key: Key, action: Action, operator_orgs: Collection[str] = ()) -> None:
    """Whether the key's role may take ``action``; ``Denied`` (403) saying what it would need."""
    if action is Action.operate:
        if not is_operator(key, operator_orgs):
            raise forbidden(
                f"{a(key.role)} key of {text(key)} may not {_DOING[action]}: that needs an org-wide admin key"
                " of an operator org (ROUTEWISE_OPERATOR_ORGS), or the CLI on the bus"
            )
        return
    if key.role not in ROLES[action]:
        needed = " or ".join(r.value for r in Role if r in ROLES[action])
        raise forbidden(f"{a(key.role)} key may not {_DOING[action]}: that needs the role {needed}")
    if action is Action.manage_org and not org_wide(key):
        raise forbidden(
            f"{a(key.role)} key of {text(key)} may not {_DOING[action]}: that needs an org-wide admin key"
            " (an adjustment moves spend on every budget of the task's scope chain, the org's included)"
        )


def text(scope: Holder | Scope) -> str:
    """``org:ID[/team:ID][/user:ID][/workspace:ID]``, as keys are written (a key names no workspace)."""
    out = f"org:{scope.org_id}"
    if scope.team_id:
        out += f"/team:{scope.team_id}"
    if scope.user_id:
        out += f"/user:{scope.user_id}"
    workspace = getattr(scope, "workspace_id", None)
    if workspace:
        out += f"/workspace:{workspace}"
    return out


def own_scope(key: Holder) -> tuple[str, str]:
    """The key's scope as a (scope_type, scope_id) a budget or a report names: its narrowest level."""
    return scope_of(key).chain()[0]


def holds(key: Holder, scope_type: str, scope_id: str) -> bool:
    """Whether what is kept on a scope (``team``, ``acme/platform``) is within the key's (``Scope.holds``)."""
    return scope_of(key).holds(scope_type, scope_id)


def holds_task(key: Holder, scope: Scope) -> bool:
    """Whether a task's scope found by its id (or a listed key's) is within the key's: every id the
    key names is the same in it (``Scope.contains``)."""
    return scope_of(key).contains(scope)


def added(key: Holder, scope: Scope) -> list[str]:
    """What ``scope`` names that the key does not (``user ceo``, ``workspace ws``)."""
    mine = scope_of(key)
    return [
        f"{part} {theirs}"
        for part, ours, theirs in (
            ("team", mine.team_id, scope.team_id),
            ("user", mine.user_id, scope.user_id),
            ("workspace", mine.workspace_id, scope.workspace_id),
        )
        if ours is None and theirs is not None
    ]


def names_within(key: Holder, scope: Scope) -> bool:
    """Whether a scope the request names is the key's to name: within it and, for a key narrower
    than its org, the key's own scope exactly (nothing added: no user for a team key, no team for a
    user key, no workspace for either)."""
    return holds_task(key, scope) and (org_wide(key) or not added(key, scope))


def require(key: Holder, scope_type: str, scope_id: str) -> None:
    """``Denied`` (403) when a scope the request names is outside the key's."""
    if not holds(key, scope_type, scope_id):
        raise forbidden(f"{scope_type}:{scope_id} is outside this key's scope ({text(key)})")


def require_task(key: Holder, scope: Scope, what: str = "a task's scope") -> None:
    """``Denied`` (403) when a scope the request names (a task's, a new key's) is not the key's to
    name (``names_within``), saying what it adds."""
    if not holds_task(key, scope):
        raise forbidden(f"{text(scope)} is outside this key's scope ({text(key)})")
    extra = [] if org_wide(key) else added(key, scope)
    if extra:
        raise forbidden(
            f"a key of {text(key)} may not name {' or '.join(extra)} in {what} ({text(scope)}): only an org-wide key"
            " names a scope narrower than its own"
        )


def require_new_key(key: Key, scope: Scope, role: Role) -> None:
    """``Denied`` (403) unless the key may make a key of ``scope`` and ``role``: a scope it may name
    (so a key naming a user comes from an org-wide key or a key of that very scope) and a role no
    higher than its own."""
    require_task(key, scope, "a new key's scope")
    if RANK[role] > RANK[key.role]:
        raise forbidden(f"{a(key.role)} key may not make {a(role)} key: a key makes keys of its role or below")


def require_org(key: Holder, org_id: str | None) -> None:
    """``Denied`` (403) when a request's org filter names another org."""
    if org_id is not None and org_id != key.org_id:
        raise forbidden(f"org {org_id} is outside this key's scope ({text(key)})")
