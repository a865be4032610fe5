"""The gateway's API keys: what a key is, how it is stored, and how a request is authenticated.

A key is ``rw_<id>_<secret>``: ``id`` is 16 hex digits, public (lists show ``rw_<id>_…``, and
``routewise keys revoke ID`` names it), and ``secret`` is 32 random bytes, URL-safe base64 (43
characters). The key is shown once, when it is created; the table keeps its SHA-256 hash.

Why a plain SHA-256 and not bcrypt, scrypt or argon2: those slow hashes exist to make guessing
a *low-entropy* secret (a password) expensive. A key carries 256 random bits: no attacker can
enumerate them however fast the hash is, so a slow hash would only put milliseconds of CPU on
every request. The hash still means a copy of the table (a backup, a leak) holds no usable key.

Authentication (``authenticate``) takes the key's id from the key, reads that row by primary key,
and compares the hashes with ``hmac.compare_digest`` (constant time). A key found valid is kept
in an in-process cache for ``CACHE_TTL`` (5 s) keyed by the key's hash, so a busy client costs
one indexed read per key per 5 s per gateway process. Revoking a key takes effect at once on the
gateway process that answered the revoke and within ``CACHE_TTL`` on every other one. Unknown
and revoked keys are never cached (a flood of bad keys cannot evict good ones): each costs one
read. ``last_used_at`` is written at most once a minute per key (only when the row read says the
stored value is a minute old), never once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog
from pydantic import TypeAdapter, ValidationError

from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Identifier, Scope
from routewise.contracts.fields import Actor
from routewise.contracts.gateway import (
    CreateKey,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyRevoked,
    ListKeys,
    RevokeKey,
    Role,
    key_scope_text,
    parse_key_scope,
)
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.db import Connection
from routewise.runtime.service import Deps

log = structlog.get_logger(__name__)

KEY_PREFIX = "rw_"
CACHE_TTL = 5.0
"""Seconds a valid key is trusted without reading its row again: the most a revocation takes to
reach another gateway process."""
LAST_USED_EVERY = 60
"""Seconds: ``last_used_at`` is written at most this often per key."""
CACHE_MAX_KEYS = 10_000

_KEY = re.compile(r"rw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_MAX_HEADER = 1_000
_USER: TypeAdapter[str] = TypeAdapter(Identifier)

INVALID_API_KEY = "invalid_api_key"


class InvalidApiKey(RoutewiseError):
    """The request carries no usable key: ``reason`` is ``missing``, ``malformed``, ``unknown`` or
    ``revoked``. The gateway answers it with 401 ``invalid_api_key``."""

    code = INVALID_API_KEY

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason


# ------------------------------------------------------------------ keys and their scope


ACTOR_MAX = 128
_ACTOR: TypeAdapter[str] = TypeAdapter(Actor)


@dataclass(frozen=True)
class KeyScope:
    """Who an authenticated key charges (its org, and optionally a team and a user in that org)
    and what it may do there (its role)."""

    key_id: str
    name: str | None
    org_id: str
    team_id: str | None = None
    user_id: str | None = None
    role: Role = Role.member

    @property
    def actor(self) -> str:
        """Who a change made with this key is attributed to in audit rows: ``key:<id> (<name>)``,
        within an actor's 128 characters (a long name is cut) — never text from the request."""
        actor = f"key:{self.key_id}"
        if self.name:
            room = ACTOR_MAX - len(actor) - 3
            name = self.name if len(self.name) <= room else self.name[: room - 1] + "…"
            actor += f" ({name})"
        return _ACTOR.validate_python(actor)

    @property
    def scope(self) -> Scope:
        return Scope(org_id=self.org_id, team_id=self.team_id, user_id=self.user_id)

    @property
    def text(self) -> str:
        return key_scope_text(self.scope)

    def task_scope(self, user: str | None) -> Scope:
        """The scope a request is charged to. The request's ``user`` (OpenAI's field) names a user
        inside the key's org (and team) when the key has no user of its own; a key with a user
        always charges that user, whatever the request says. A ``user`` that is not an id
        (1 to 128 letters, digits or ``_.:@-``) is an ``invalid_request`` error."""
        if self.user_id is not None or user is None:
            return self.scope
        try:
            user_id = _USER.validate_python(user)
        except ValidationError:
            raise RoutewiseError(
                f"user must be 1 to 128 letters, digits or _.:@-, starting with a letter or digit; not {user[:140]!r}",
                code=ErrorCode.invalid_request,
            ) from None
        return Scope(org_id=self.org_id, team_id=self.team_id, user_id=user_id)


def new_key() -> tuple[str, str]:
    """(id, key) for a new key: 64 random bits of public id and 256 of secret."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def shown_prefix(key_id: str) -> str:
    """How a key begins, as lists show it (the public part only)."""
    return f"{KEY_PREFIX}{key_id}_…"


def key_from_header(authorization: str | None) -> tuple[str, str]:
    """(id, key) from an ``Authorization: Bearer rw_…`` header; InvalidApiKey when there is none
    or it is not one. The secret is never repeated in a message."""
    if authorization is None or not authorization.strip():
        raise InvalidApiKey(
            "missing",
            "no API key: send the header Authorization: Bearer <key> "
            "(create a key with `routewise keys create --scope org:ID`)",
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidApiKey("malformed", "the Authorization header must be 'Bearer <key>'")
    match = _KEY.fullmatch(token) if len(token) <= _MAX_HEADER else None
    if match is None:
        raise InvalidApiKey("malformed", "the API key is not a Routewise key (rw_<16 hex digits>_<secret>)")
    return match.group(1), token


# ------------------------------------------------------------------ the cache


@dataclass
class KeyCache:
    """Valid keys by their hash, each trusted for ``ttl`` seconds (monotonic clock)."""

    ttl: float = CACHE_TTL
    max_keys: int = CACHE_MAX_KEYS
    clock: Callable[[], float] = time.monotonic
    _entries: dict[bytes, tuple[float, KeyScope]] = field(default_factory=dict)

    def get(self, digest: bytes) -> KeyScope | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, scope = entry
        if self.clock() >= expires:
            del self._entries[digest]
            return None
        return scope

    def put(self, digest: bytes, scope: KeyScope) -> None:
        if len(self._entries) >= self.max_keys:
            now = self.clock()
            self._entries = {d: e for d, e in self._entries.items() if e[0] > now}
            while len(self._entries) >= self.max_keys:  # all fresh: the oldest goes
                del self._entries[next(iter(self._entries))]
        self._entries[digest] = (self.clock() + self.ttl, scope)

    def forget(self, key_id: str) -> None:
        """Drop a key at once (it was revoked here)."""
        self._entries = {d: e for d, e in self._entries.items() if e[1].key_id != key_id}


KEY_CACHE = KeyCache()
"""This process's cache (keys are unique by hash, so one cache serves any number of gateways)."""


# ------------------------------------------------------------------ authentication


async def authenticate(
    db: asyncpg.Pool | Connection, authorization_header: str | None, *, cache: KeyCache = KEY_CACHE
) -> KeyScope:
    """The scope of the key in ``Authorization: Bearer <key>``; InvalidApiKey when the header is
    missing or malformed, or the key is unknown or revoked."""
    key_id, key = key_from_header(authorization_header)
    digest = key_hash(key)
    if (cached := cache.get(digest)) is not None:
        return cached
    row = await db.fetchrow(
        "SELECT id, key_hash, name, org_id, team_id, user_id, role, revoked_at,"
        " last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2) AS stale"
        " FROM api_keys WHERE id = $1",
        key_id,
        LAST_USED_EVERY,
    )
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        raise InvalidApiKey("unknown", f"unknown API key {shown_prefix(key_id)}")
    if row["revoked_at"] is not None:
        when = f"{row['revoked_at']:%Y-%m-%d %H:%M} UTC"
        raise InvalidApiKey("revoked", f"API key {shown_prefix(key_id)} was revoked on {when}")
    if row["stale"]:
        await db.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)
    scope = KeyScope(key_id, row["name"], row["org_id"], row["team_id"], row["user_id"], Role(row["role"]))
    cache.put(digest, scope)
    return scope


# ------------------------------------------------------------------ storage


def _info(row: asyncpg.Record) -> KeyInfo:
    scope = Scope(org_id=row["org_id"], team_id=row["team_id"], user_id=row["user_id"])
    return KeyInfo(
        id=row["id"],
        prefix=shown_prefix(row["id"]),
        scope=key_scope_text(scope),
        org_id=scope.org_id,
        team_id=scope.team_id,
        user_id=scope.user_id,
        name=row["name"],
        role=row["role"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


_COLUMNS = "id, name, org_id, team_id, user_id, role, created_at, created_by, last_used_at, revoked_at, revoked_by"


async def insert_key(conn: Connection, req: CreateKey, now: datetime) -> KeyCreated:
    scope = parse_key_scope(req.scope)
    text = key_scope_text(scope)
    key_id, key = new_key()
    await conn.execute(
        "INSERT INTO api_keys (id, key_hash, name, org_id, team_id, user_id, role, created_at, created_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        key_id,
        key_hash(key),
        req.name,
        scope.org_id,
        scope.team_id,
        scope.user_id,
        req.role.value,
        now,
        req.actor,
    )
    return KeyCreated(
        id=key_id,
        key=key,
        prefix=shown_prefix(key_id),
        scope=text,
        name=req.name,
        role=req.role,
        created_at=now,
        created_by=req.actor,
    )


async def select_keys(conn: Connection, req: ListKeys) -> list[KeyInfo]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_keys"
        " WHERE ($1::text IS NULL OR org_id = $1) AND ($2 OR revoked_at IS NULL) AND ($4::text IS NULL OR id = $4)"
        " ORDER BY created_at DESC, id LIMIT $3",
        req.org,
        req.include_revoked,
        req.limit,
        req.id,
    )
    return [_info(row) for row in rows]


async def revoke_key_row(conn: Connection, req: RevokeKey, now: datetime) -> KeyRevoked:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE", req.id)
    if row is None:
        raise RoutewiseError(f"no API key {req.id}", code=ErrorCode.not_found)
    if row["revoked_at"] is not None:
        return KeyRevoked(key=_info(row), already_revoked=True)
    row = await conn.fetchrow(
        f"UPDATE api_keys SET revoked_at = $2, revoked_by = $3 WHERE id = $1 RETURNING {_COLUMNS}",
        req.id,
        now,
        req.actor,
    )
    assert row is not None  # locked above
    return KeyRevoked(key=_info(row), already_revoked=False)


# ------------------------------------------------------------------ request handlers


async def create_key(req: CreateKey, deps: Deps) -> KeyCreated:
    """``keys_create``: a new key; the reply is the only place the key ever appears."""
    async with deps.transaction() as uow:
        created = await insert_key(uow.conn, req, deps.clock())
    log.info("api key created", key_id=created.id, scope=created.scope, role=created.role.value, actor=req.actor)
    return created


async def list_keys(req: ListKeys, deps: Deps) -> KeyList:
    """``keys_list``: keys newest first, without their secrets."""
    async with deps.pool.acquire() as conn:
        return KeyList(keys=await select_keys(conn, req))


async def revoke_key(req: RevokeKey, deps: Deps) -> KeyRevoked:
    """``keys_revoke``: the key stops authenticating (here at once, on other gateway processes
    within ``CACHE_TTL``); revoking it again changes nothing."""
    async with deps.transaction() as uow:
        revoked = await revoke_key_row(uow.conn, req, deps.clock())
    KEY_CACHE.forget(req.id)
    if not revoked.already_revoked:
        log.info("api key revoked", key_id=req.id, actor=req.actor)
    return revoked
