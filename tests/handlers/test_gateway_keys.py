"""The gateway's API keys called directly: real Postgres (the gateway's role and schema), no bus."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Scope
from routewise.contracts.gateway import CreateKey, KeyCreated, ListKeys, RevokeKey, Role
from routewise.runtime.service import Deps
from routewise.runtime.settings import Settings
from routewise.services.gateway import keys
from routewise.services.gateway.keys import InvalidApiKey, KeyCache, authenticate
from tests.helpers import Clock

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> Deps:
    return Deps(pool=await service_pool("gateway"), settings=settings, clock=Clock(NOW))


class Ticks:
    """A monotonic clock moved by hand (the cache's TTL)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def an_org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


async def a_key(deps: Deps, scope: str, name: str | None = None) -> KeyCreated:
    return await keys.create_key(CreateKey(scope=scope, name=name, actor="ana@laptop"), deps)


async def test_a_new_key_authenticates_as_its_scope(deps: Deps) -> None:
    org = an_org()
    created = await a_key(deps, f"org:{org}/team:platform", name="ci")

    scope = await authenticate(deps.pool, f"Bearer {created.key}")

    assert created.key.startswith(f"rw_{created.id}_") and len(created.key) == 63
    assert created.prefix == f"rw_{created.id}_…"
    assert (created.scope, created.name, created.created_by) == (f"org:{org}/team:platform", "ci", "ana@laptop")
    assert (scope.key_id, scope.org_id, scope.team_id, scope.user_id) == (created.id, org, "platform", None)
    assert scope.task_scope(None) == Scope(org_id=org, team_id="platform")


async def test_the_key_is_stored_only_as_its_hash(deps: Deps, admin: asyncpg.Connection) -> None:
    created = await a_key(deps, f"org:{an_org()}")
    secret = created.key.split("_", 2)[2]

    row = await admin.fetchrow("SELECT * FROM gateway.api_keys WHERE id = $1", created.id)

    assert row is not None
    assert not any(secret in str(value) or created.key in str(value) for value in row.values())
    assert bytes(row["key_hash"]) == keys.key_hash(created.key)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer sk-proj-abcdef", "malformed"),
        ("Bearer rw_0123456789abcdef_short", "malformed"),
        ("Bearer " + "rw_" + "x" * 5000, "malformed"),
    ],
)
async def test_a_missing_or_malformed_header_is_refused_saying_why(deps: Deps, header: str | None, reason: str) -> None:
    with pytest.raises(InvalidApiKey) as refused:
        await authenticate(deps.pool, header)

    assert refused.value.code == "invalid_api_key" and refused.value.reason == reason
    assert "Authorization" in refused.value.message or "Routewise key" in refused.value.message


async def test_an_unknown_key_or_a_wrong_secret_is_refused_without_echoing_it(deps: Deps) -> None:
    created = await a_key(deps, f"org:{an_org()}")
    never_created = keys.new_key()[1]
    wrong_secret = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")

    for key in (never_created, wrong_secret):
        with pytest.raises(InvalidApiKey) as refused:
            await authenticate(deps.pool, f"Bearer {key}")
        assert refused.value.reason == "unknown"
        assert key.split("_", 2)[2] not in refused.value.message  # the secret is never repeated


async def test_a_revoked_key_is_refused_at_once_by_the_process_that_revoked_it(deps: Deps) -> None:
    created = await a_key(deps, f"org:{an_org()}")
    await authenticate(deps.pool, f"Bearer {created.key}")  # cached now

    revoked = await keys.revoke_key(RevokeKey(id=created.id, actor="ops"), deps)
    with pytest.raises(InvalidApiKey) as refused:
        await authenticate(deps.pool, f"Bearer {created.key}")
    again = await keys.revoke_key(RevokeKey(id=created.id, actor="someone else"), deps)

    assert not revoked.already_revoked and revoked.key.revoked_at == NOW and revoked.key.revoked_by == "ops"
    assert refused.value.reason == "revoked" and created.id in refused.value.message
    assert again.already_revoked and again.key.revoked_by == "ops"


async def test_another_process_refuses_a_revoked_key_within_the_cache_ttl(deps: Deps) -> None:
    ticks = Ticks()
    elsewhere = KeyCache(clock=ticks)  # another gateway process's cache: the revoke is not told to it
    created = await a_key(deps, f"org:{an_org()}")
    await authenticate(deps.pool, f"Bearer {created.key}", cache=elsewhere)

    await keys.revoke_key(RevokeKey(id=created.id, actor="ops"), deps)
    ticks.now += keys.CACHE_TTL - 0.1
    still_trusted = await authenticate(deps.pool, f"Bearer {created.key}", cache=elsewhere)
    ticks.now += 0.1
    with pytest.raises(InvalidApiKey) as refused:
        await authenticate(deps.pool, f"Bearer {created.key}", cache=elsewhere)

    assert keys.CACHE_TTL == 5.0
    assert still_trusted.key_id == created.id
    assert refused.value.reason == "revoked"


async def test_revoking_an_unknown_key_is_not_found(deps: Deps) -> None:
    with pytest.raises(RoutewiseError) as refused:
        await keys.revoke_key(RevokeKey(id="0123456789abcdef", actor="ops"), deps)

    assert refused.value.code == "not_found"


async def test_the_request_user_names_a_user_inside_a_key_without_one(deps: Deps) -> None:
    org = an_org()
    team_key = await authenticate(deps.pool, f"Bearer {(await a_key(deps, f'org:{org}/team:platform')).key}")
    user_key = await authenticate(deps.pool, f"Bearer {(await a_key(deps, f'org:{org}/user:bob')).key}")

    assert team_key.task_scope("ana") == Scope(org_id=org, team_id="platform", user_id="ana")
    assert user_key.task_scope("mallory") == Scope(org_id=org, user_id="bob")  # a user key charges its user
    assert user_key.task_scope(None) == Scope(org_id=org, user_id="bob")
    with pytest.raises(RoutewiseError) as refused:
        team_key.task_scope("Ana Smith")
    assert refused.value.code == "invalid_request" and "user" in refused.value.message


async def test_a_list_shows_each_key_without_its_secret_newest_first(deps: Deps) -> None:
    org, other = an_org(), an_org()
    clock = deps.clock
    assert isinstance(clock, Clock)
    first = await a_key(deps, f"org:{org}", name="first")
    clock.now = NOW.replace(minute=5)
    second = await a_key(deps, f"org:{org}/team:platform/user:ana", name="second")
    await a_key(deps, f"org:{other}")
    await keys.revoke_key(RevokeKey(id=first.id, actor="ops"), deps)

    listed = await keys.list_keys(ListKeys(org=org), deps)
    active = await keys.list_keys(ListKeys(org=org, include_revoked=False), deps)

    assert [k.id for k in listed.keys] == [second.id, first.id]
    assert [k.id for k in active.keys] == [second.id]
    assert listed.keys[0].scope == f"org:{org}/team:platform/user:ana" and listed.keys[0].user_id == "ana"
    assert listed.keys[1].revoked_by == "ops" and listed.keys[1].last_used_at is None
    text = listed.model_dump_json()
    assert first.key not in text and second.key not in text
    assert second.key.split("_", 2)[2] not in text


async def test_last_used_is_written_at_most_once_a_minute(deps: Deps, admin: asyncpg.Connection) -> None:
    ticks = Ticks()
    cache = KeyCache(clock=ticks)
    created = await a_key(deps, f"org:{an_org()}")

    async def last_used() -> datetime | None:
        value: datetime | None = await admin.fetchval(
            "SELECT last_used_at FROM gateway.api_keys WHERE id = $1", created.id
        )
        return value

    await authenticate(deps.pool, f"Bearer {created.key}", cache=cache)
    first = await last_used()
    ticks.now += keys.CACHE_TTL  # the cache expired: the row is read again, but not written
    await authenticate(deps.pool, f"Bearer {created.key}", cache=cache)
    unchanged = await last_used()
    await admin.execute(
        "UPDATE gateway.api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1", created.id
    )
    ticks.now += keys.CACHE_TTL
    await authenticate(deps.pool, f"Bearer {created.key}", cache=cache)
    rewritten = await last_used()

    assert first is not None and unchanged == first
    assert rewritten is not None and rewritten >= first  # written again: back to now, not first - 61 s


async def test_a_key_has_the_role_it_was_made_with_and_a_member_by_default(deps: Deps) -> None:
    org = an_org()
    admin_key = await keys.create_key(
        CreateKey(scope=f"org:{org}", name="ops", role=Role.admin, actor="ana@laptop"), deps
    )
    plain = await a_key(deps, f"org:{org}/team:platform")

    as_admin = await authenticate(deps.pool, f"Bearer {admin_key.key}", cache=KeyCache())
    as_plain = await authenticate(deps.pool, f"Bearer {plain.key}", cache=KeyCache())
    listed = {k.id: k.role for k in (await keys.list_keys(ListKeys(org=org), deps)).keys}
    one = await keys.list_keys(ListKeys(id=plain.id), deps)

    assert (admin_key.role, as_admin.role, as_plain.role) == (Role.admin, Role.admin, Role.member)
    assert listed == {admin_key.id: Role.admin, plain.id: Role.member}
    assert [k.id for k in one.keys] == [plain.id]


async def test_a_key_made_before_roles_existed_is_a_member(deps: Deps, admin: asyncpg.Connection) -> None:
    key_id, key = keys.new_key()
    await admin.execute(  # the columns of migration 0002, as an older gateway wrote them
        "INSERT INTO gateway.api_keys (id, key_hash, name, org_id, created_by) VALUES ($1, $2, 'old', $3, 'ops')",
        key_id,
        keys.key_hash(key),
        an_org(),
    )

    scope = await authenticate(deps.pool, f"Bearer {key}", cache=KeyCache())

    assert scope.role is Role.member


def test_a_change_made_with_a_key_is_attributed_to_its_id_and_name_within_128_characters() -> None:
    named = keys.KeyScope("0123456789abcdef", "ci deploys", "acme")
    unnamed = keys.KeyScope("0123456789abcdef", None, "acme")
    long = keys.KeyScope("0123456789abcdef", "n" * 200, "acme")

    assert named.actor == "key:0123456789abcdef (ci deploys)"
    assert unnamed.actor == "key:0123456789abcdef"
    assert len(long.actor) == 128 and long.actor.startswith("key:0123456789abcdef (nnn") and long.actor.endswith("…)")
