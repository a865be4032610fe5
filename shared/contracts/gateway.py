"""The gateway's request/reply contracts: its API keys (create, list, revoke).

A key is shown once, when it is created (``KeyCreated.key``); the gateway stores only its hash,
so no reply after that carries it. A key's scope is who its calls are charged to, written
``org:ID[/team:ID][/user:ID]``: ``org:acme``, ``org:acme/team:platform``,
``org:acme/team:platform/user:ana`` (or ``org:acme/user:ana`` for a user outside any team).
A key's role is what it may do within that scope (``Role``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from routewise.contracts.events import Contract, Identifier, Scope
from routewise.contracts.fields import Actor

KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
KeyId = Annotated[str, Field(min_length=16, max_length=16, pattern=KEY_ID_PATTERN)]
"""A key's public id: 16 hex digits, also the visible part of the key (``rw_<id>_<secret>``)."""

KeyName = Annotated[str, Field(min_length=1, max_length=200)]


class Role(StrEnum):
    """What a key may do within its scope (the gateway's ``authorization`` module holds the rules)."""

    admin = "admin"
    """Everything a member may, and manage the scope: budgets, approvals, extensions, tier
    preferences, keys (and, for an org-wide admin key of an operator org, prices and policies)."""
    member = "member"
    """Route tasks (chat completions, ``/complete``), record feedback, read its scope."""
    viewer = "viewer"
    """Read its scope, and what is every org's (prices, policies, model statistics); nothing else."""


_SHAPES = (("org",), ("org", "team"), ("org", "user"), ("org", "team", "user"))
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def parse_key_scope(text: str) -> Scope:
    """``org:ID[/team:ID][/user:ID]`` as a ``Scope``; ValueError saying what is wrong otherwise."""
    pieces = [piece.partition(":") for piece in text.split("/")]
    if tuple(kind for kind, _, _ in pieces) not in _SHAPES or not all(sep for _, sep, _ in pieces):
        raise ValueError(
            f"a key's scope is org:ID[/team:ID][/user:ID] (e.g. org:acme/team:platform/user:ana), not {text!r}"
        )
    parts: dict[str, str] = {}
    for kind, _, ident in pieces:
        try:
            parts[kind] = _IDENTIFIER.validate_python(ident)
        except ValidationError:
            raise ValueError(
                f"{kind} id {ident!r} in {text!r}: 1 to 128 letters, digits or _.:@-, starting with a letter or digit"
            ) from None
    return Scope(org_id=parts["org"], team_id=parts.get("team"), user_id=parts.get("user"))


def key_scope_text(scope: Scope) -> str:
    """The scope as ``org:ID[/team:ID][/user:ID]`` (what ``parse_key_scope`` reads)."""
    text = f"org:{scope.org_id}"
    if scope.team_id:
        text += f"/team:{scope.team_id}"
    if scope.user_id:
        text += f"/user:{scope.user_id}"
    return text


def _key_scope(text: str) -> str:
    parse_key_scope(text)
    return text


KeyScopeText = Annotated[str, Field(min_length=1, max_length=420), AfterValidator(_key_scope)]
"""``org:ID[/team:ID][/user:ID]``."""


class CreateKey(Contract):
    """A new API key charging ``scope``; the reply holds the key itself, the only time it is shown."""

    scope: KeyScopeText = Field(description="org:ID[/team:ID][/user:ID]")
    name: KeyName | None = None
    role: Role = Field(default=Role.member, description="admin, member or viewer")
    actor: Actor


class KeyInfo(Contract):
    """A key as lists show it: never its secret."""

    id: KeyId
    prefix: Annotated[str, Field(max_length=40)] = Field(description="rw_<id>_… : how the key begins")
    scope: Annotated[str, Field(max_length=420)]
    org_id: Identifier
    team_id: Identifier | None = None
    user_id: Identifier | None = None
    name: KeyName | None = None
    role: Role = Role.member
    created_at: datetime
    created_by: Actor
    last_used_at: datetime | None = Field(default=None, description="to the minute: written at most once a minute")
    revoked_at: datetime | None = None
    revoked_by: Actor | None = None


class KeyCreated(Contract):
    """The new key (``key``: shown this once; only its hash is stored) and what it is."""

    id: KeyId
    key: Annotated[str, Field(max_length=80)]
    prefix: Annotated[str, Field(max_length=40)]
    scope: Annotated[str, Field(max_length=420)]
    name: KeyName | None = None
    role: Role = Role.member
    created_at: datetime
    created_by: Actor


class ListKeys(Contract):
    org: Identifier | None = Field(default=None, description="only this org's keys (default: every org's)")
    id: KeyId | None = Field(default=None, description="only this key")
    include_revoked: bool = True
    limit: int = Field(default=1000, ge=1, le=10_000)


class KeyList(Contract):
    """Newest first."""

    keys: list[KeyInfo]


class RevokeKey(Contract):
    id: KeyId
    actor: Actor


class KeyRevoked(Contract):
    """The key, now revoked. ``already_revoked``: it was before this request (nothing changed)."""

    key: KeyInfo
    already_revoked: bool
