"""API keys as a user meets them: ``routewise keys`` over the bus, answered by the gateway, and
the keys at the gateway's HTTP API (the official ``openai`` SDK, and httpx for a call without
any key): the services in this process, the mock provider as every provider."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from routewise.dev.mock_provider import MockProvider
from routewise.services.gateway.keys import InvalidApiKey, KeyScope, authenticate
from tests.conftest import Database, RunningStack
from tests.helpers import eventually
from tests.system.test_gateway import Gateway, serving

PROMPT: list[Any] = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def serving_gateway(nats_url: str, database: Database) -> Iterator[Gateway]:
    with MockProvider(seed=3) as mock, serving(nats_url, database, mock) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gateway(serving_gateway: Gateway) -> RunningStack:
    return serving_gateway.stack


@pytest.fixture(scope="module")
def base_url(serving_gateway: Gateway) -> str:
    return f"{serving_gateway.url}/v1"


def new_key(stack: RunningStack, scope: str) -> dict[str, Any]:
    created = stack.cli("keys", "create", "--scope", scope, "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    result: dict[str, Any] = json.loads(created.stdout)
    return result


def client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def spend(stack: RunningStack, scope: str, calls: int) -> Decimal:
    """A scope's all-time spend once budget-enforcer has applied ``calls`` costs on it."""

    async def applied() -> Decimal | None:
        result = await asyncio.to_thread(stack.cli, "budgets", "status", scope, "--json")
        status = json.loads(result.stdout)
        return Decimal(status["spent_usd"]) if status["costs_recorded"] >= calls else None

    found: Decimal = asyncio.run(eventually(applied, timeout=15, interval=0.2))
    return found


def authenticate_on(stack: RunningStack, key: str) -> KeyScope:
    """The gateway's own check of ``Authorization: Bearer <key>``, on its loop and pool."""
    system = stack.system
    assert system is not None and system.loop is not None
    pool = system.deps("gateway").pool
    return asyncio.run_coroutine_threadsafe(authenticate(pool, f"Bearer {key}"), system.loop).result(10)


def test_create_prints_the_key_once_and_says_to_store_it(gateway: RunningStack) -> None:
    created = gateway.cli("keys", "create", "--scope", "org:acme/team:platform", "--name", "ci", "--by", "ana")

    assert created.returncode == 0, created.stderr
    keys = [line for line in created.stdout.splitlines() if line.startswith("rw_")]
    assert len(keys) == 1
    assert created.stdout.count(keys[0]) == 1
    assert "Store this key now" in created.stderr and "not shown again" in created.stderr
    scope = authenticate_on(gateway, keys[0])
    assert (scope.org_id, scope.team_id, scope.user_id, scope.name) == ("acme", "platform", None, "ci")


def test_json_has_the_id_and_the_key_and_a_list_never_shows_a_secret(gateway: RunningStack) -> None:
    created = json.loads(gateway.cli("keys", "create", "--scope", "org:acme/user:ana", "--json").stdout)
    secret = created["key"].split("_", 2)[2]

    listed = gateway.cli("keys", "list", "--org", "acme")
    listed_json = json.loads(gateway.cli("keys", "list", "--org", "acme", "--json").stdout)

    assert created["key"].startswith(f"rw_{created['id']}_") and created["scope"] == "org:acme/user:ana"
    assert listed.returncode == 0 and f"rw_{created['id']}_…" in listed.stdout
    assert secret not in listed.stdout and secret not in json.dumps(listed_json)
    assert {"id": created["id"], "scope": "org:acme/user:ana", "user_id": "ana"}.items() <= next(
        k for k in listed_json["keys"] if k["id"] == created["id"]
    ).items()
    assert all("key" not in k for k in listed_json["keys"])


def test_a_revoked_key_no_longer_authenticates(gateway: RunningStack) -> None:
    created = json.loads(gateway.cli("keys", "create", "--scope", "org:acme", "--json").stdout)
    authenticate_on(gateway, created["key"])

    revoked = gateway.cli("keys", "revoke", created["prefix"], "--by", "ops")  # rw_<id>_… as the list shows it
    again = gateway.cli("keys", "revoke", created["id"], "--json")
    listed = json.loads(gateway.cli("keys", "list", "--org", "acme", "--json").stdout)

    assert revoked.returncode == 0 and "revoked key" in revoked.stdout
    assert json.loads(again.stdout)["already_revoked"] is True
    entry = next(k for k in listed["keys"] if k["id"] == created["id"])
    assert entry["revoked_by"] == "ops" and entry["revoked_at"] is not None
    with pytest.raises(InvalidApiKey) as refused:
        authenticate_on(gateway, created["key"])
    assert refused.value.reason == "revoked"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["keys", "create", "--scope", "team:platform", "--json"], "invalid_request", "org:ID[/team:ID][/user:ID]"),
        (["keys", "create", "--scope", "org:ac me", "--json"], "invalid_request", "'ac me'"),
        (["keys", "revoke", "0123456789abcdef", "--json"], "not_found", "0123456789abcdef"),
        (["keys", "revoke", "nope", "--json"], "invalid_request", "16 hex digits"),
    ],
)
def test_bad_input_is_a_clear_error(gateway: RunningStack, args: list[str], code: str, says: str) -> None:
    result = gateway.cli(*args)

    error = json.loads(result.stdout)["error"]
    assert result.returncode == 1 and error["code"] == code and says in error["message"]


# ------------------------------------------------------------------ at the HTTP API


def test_a_call_without_a_key_is_401_invalid_api_key(base_url: str) -> None:
    answer = httpx.post(f"{base_url}/chat/completions", json={"model": "routewise/auto", "messages": PROMPT})

    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "no API key" in error["message"] and "Authorization: Bearer" in error["message"]


def test_a_revoked_key_is_401_at_once(gateway: RunningStack, base_url: str) -> None:
    created = new_key(gateway, f"org:rev-{uuid.uuid4().hex[:8]}")
    answered = client(base_url, created["key"]).chat.completions.create(model="routewise/auto", messages=PROMPT)

    assert gateway.cli("keys", "revoke", created["id"]).returncode == 0
    with pytest.raises(openai.AuthenticationError) as refused:
        client(base_url, created["key"]).chat.completions.create(model="routewise/auto", messages=PROMPT)

    assert answered.choices[0].message.content
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert f"rw_{created['id']}_… was revoked" in refused.value.message
    assert created["key"].split("_", 2)[2] not in str(refused.value.body)  # the secret is not echoed


def test_the_keys_scope_is_charged_with_the_request_user_inside_it(gateway: RunningStack, base_url: str) -> None:
    org = f"charged-{uuid.uuid4().hex[:8]}"
    team_key = new_key(gateway, f"org:{org}/team:platform")
    user_key = new_key(gateway, f"org:{org}/user:bob")

    by_ana = client(base_url, team_key["key"]).chat.completions.with_raw_response.create(
        model="routewise/auto", messages=PROMPT, user="ana"
    )
    by_bob = client(base_url, user_key["key"]).chat.completions.with_raw_response.create(
        model="routewise/auto",
        messages=PROMPT,
        user="mallory",  # a key with a user charges its user
    )
    ana_cost = Decimal(by_ana.headers["x-routewise-cost-usd"])
    bob_cost = Decimal(by_bob.headers["x-routewise-cost-usd"])

    assert ana_cost > 0 and bob_cost > 0
    assert spend(gateway, f"user:{org}/ana", 1) == ana_cost
    assert spend(gateway, f"team:{org}/platform", 1) == ana_cost
    assert spend(gateway, f"user:{org}/bob", 1) == bob_cost
    assert spend(gateway, f"org:{org}", 2) == ana_cost + bob_cost
    mallory = json.loads(gateway.cli("budgets", "status", f"user:{org}/mallory", "--json").stdout)
    assert mallory["costs_recorded"] == 0


def test_a_request_user_that_is_not_an_id_is_a_400(gateway: RunningStack, base_url: str) -> None:
    key = new_key(gateway, f"org:bad-user-{uuid.uuid4().hex[:8]}")["key"]

    with pytest.raises(openai.BadRequestError) as refused:
        client(base_url, key).chat.completions.create(model="routewise/auto", messages=PROMPT, user="Ana Smith")

    assert "user" in refused.value.message
