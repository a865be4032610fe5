"""The gateway's keys without a database: scope syntax, key format, the header, the cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from routewise.contracts.events import Scope
from routewise.contracts.gateway import CreateKey, key_scope_text, parse_key_scope
from routewise.services.gateway import keys
from routewise.services.gateway.keys import InvalidApiKey, KeyCache, KeyScope, key_from_header

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,20}", fullmatch=True)


@given(org=ids, team=st.none() | ids, user=st.none() | ids)
def test_a_scope_reads_back_as_it_was_written(org: str, team: str | None, user: str | None) -> None:
    scope = Scope(org_id=org, team_id=team, user_id=user)

    assert parse_key_scope(key_scope_text(scope)) == scope


@pytest.mark.parametrize(
    "text",
    ["acme", "team:platform", "org:acme/user:ana/team:platform", "org:a/org:b", "org:acme/team:", "org:ac me"],
)
def test_a_scope_out_of_its_syntax_is_refused_saying_so(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        CreateKey(scope=text, actor="ops")

    assert "org:ID" in str(refused.value) or "letters, digits" in str(refused.value)


def test_keys_are_unique_and_carry_their_public_id() -> None:
    made = [keys.new_key() for _ in range(1000)]

    assert len({key for _, key in made}) == len({key_id for key_id, _ in made}) == 1000
    for key_id, key in made:
        assert key_from_header(f"Bearer {key}") == (key_id, key)
        assert len(key.split("_", 2)[2]) == 43  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize("header", ["bearer {key}", "Bearer   {key}  ", "BEARER {key}"])
def test_the_scheme_is_case_insensitive_and_spaces_do_not_matter(header: str) -> None:
    key_id, key = keys.new_key()

    assert key_from_header(header.format(key=key)) == (key_id, key)


def test_the_cache_trusts_a_key_for_its_ttl_and_forgets_a_revoked_one() -> None:
    now = [0.0]
    cache = KeyCache(ttl=5.0, clock=lambda: now[0])
    scope = KeyScope("0123456789abcdef", None, "acme")
    cache.put(b"h" * 32, scope)

    now[0] = 4.9
    assert cache.get(b"h" * 32) == scope
    now[0] = 5.0
    assert cache.get(b"h" * 32) is None
    cache.put(b"h" * 32, scope)
    cache.forget("0123456789abcdef")
    assert cache.get(b"h" * 32) is None


def test_a_full_cache_drops_its_oldest_key() -> None:
    cache = KeyCache(max_keys=3, clock=lambda: 0.0)
    for i in range(4):
        cache.put(bytes([i]) * 32, KeyScope(f"{i:016x}", None, "acme"))

    assert cache.get(bytes([0]) * 32) is None
    assert all(cache.get(bytes([i]) * 32) is not None for i in (1, 2, 3))


def test_a_secret_is_never_repeated_in_a_refusal() -> None:
    _, key = keys.new_key()

    with pytest.raises(InvalidApiKey) as refused:
        key_from_header(f"Token {key}")

    assert key not in refused.value.message and refused.value.reason == "malformed"
