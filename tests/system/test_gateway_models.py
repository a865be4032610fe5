"""A model registered at run time, served by a gateway that was running already: the official
``openai`` SDK against the gateway's HTTP on a real uvicorn, the services in this process on a
real NATS and Postgres, the mock provider behind every provider (a new one included)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from routewise.contracts.catalog import DEFAULT_CATALOG
from routewise.contracts.gateway import CreateKey, Role
from routewise.dev.mock_provider import MockProvider
from routewise.services.gateway import keys
from tests.conftest import Database
from tests.system.test_gateway import PROMPT, Gateway, costs_of, serving

OPS = f"ops-{uuid.uuid4().hex[:6]}"
"""The operator org: its org-wide admin keys may change what is every org's over HTTP."""


UNPRICED = f"acme-private-{uuid.uuid4().hex[:6]}"
"""A model of this stack's shipped catalog that no price database knows (nor any override)."""


@pytest.fixture(scope="module")
def gateway(nats_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    catalog = tmp_path_factory.mktemp("catalog") / "models.toml"
    unpriced = f'\n[[models]]\nid = "{UNPRICED}"\nprovider = "mock"\ntier = "micro"\nquality_prior = 0.9\n'
    catalog.write_text(DEFAULT_CATALOG.read_text() + unpriced + "context_window = 32000\n")
    env = {"ROUTEWISE_OPERATOR_ORGS": OPS, "ROUTEWISE_CATALOG_PATH": str(catalog)}
    with MockProvider(seed=11) as mock, serving(nats_url, database, mock, extra_env=env) as gateway:
        yield gateway


def a_key(gateway: Gateway, scope: str, role: Role) -> str:
    deps = gateway.stack.system.deps("gateway")  # type: ignore[union-attr]

    async def create() -> str:
        async with deps.transaction() as uow:
            made = await keys.insert_key(uow.conn, CreateKey(scope=scope, role=role, actor="test"), deps.clock())
        return made.key

    result: str = gateway.run(create())
    return result


def test_a_model_registered_at_run_time_is_served_at_once_and_charged_at_its_price(gateway: Gateway) -> None:
    model = f"acme-small-{uuid.uuid4().hex[:6]}"
    client = gateway.client(f"acme-{uuid.uuid4().hex[:8]}")
    with pytest.raises(openai.BadRequestError, match="unknown model"):
        client.chat.completions.create(model=model, messages=PROMPT)  # type: ignore[arg-type]

    registered = gateway.stack.cli(
        "models", "register", model, "--provider", "acme-gpu", "--tier", "standard", "--quality", "0.7",
        "--context-window", "32000", "--input", "0.5", "--output", "1.5", "--by", "ops@acme", "--json",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert json.loads(registered.stdout)["model"]["routable"] is True

    raw = client.chat.completions.with_raw_response.create(model=model, messages=PROMPT, max_tokens=50)  # type: ignore[arg-type]
    answer = raw.parse()

    assert answer.model == raw.headers["x-routewise-model"] == model
    assert raw.headers["x-routewise-tier"] == "standard"
    assert answer.usage is not None and answer.choices[0].message.content
    assert gateway.mock.calls(model=model)  # a provider the gateway did not have when it started
    [cost] = costs_of(gateway, raw.headers["x-routewise-task-id"], 1)
    assert cost["model"] == model and cost["provider"] == "acme-gpu" and cost["success"] is True
    usage = answer.usage
    expected = (Decimal("0.5") * usage.prompt_tokens + Decimal("1.5") * usage.completion_tokens) / Decimal(1_000_000)
    assert Decimal(cost["cost_usd"]) == expected > 0  # at the registered price, not genai-prices' (it has none)
    assert Decimal(raw.headers["x-routewise-cost-usd"]) == expected

    listed = {m.id: m for m in client.models.list()}
    assert listed[model].owned_by == "acme-gpu"


def test_an_operator_admin_registers_a_model_over_http_and_it_is_served_at_once(gateway: Gateway) -> None:
    model = f"acme-http-{uuid.uuid4().hex[:6]}"
    body = {
        "id": model,
        "provider": "acme-gpu",
        "tier": "micro",
        "quality_prior": 0.6,
        "context_window": 16000,
        "input_mtok": "0.2",
        "output_mtok": "0.4",
    }
    ops = {"Authorization": f"Bearer {a_key(gateway, f'org:{OPS}', Role.admin)}"}
    tenant = {"Authorization": f"Bearer {a_key(gateway, 'org:tenant-' + uuid.uuid4().hex[:6], Role.admin)}"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        refused = http.post("/api/v1/models", json=body, headers=tenant)  # an org's admin: not the operator
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"

        created = http.post("/api/v1/models", json=body, headers=ops)
        assert created.status_code == 201, created.text
        entry = created.json()
        assert entry["model"]["id"] == model and entry["routable"] is True
        assert entry["registered_by"] and entry["registered_by"] != "test"  # the key that registered it

        listed = http.get("/api/v1/models", headers=tenant)  # every role reads the catalog
        assert listed.status_code == 200
        assert model in {e["model"]["id"] for e in listed.json()["models"]}

        answer = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant["Authorization"][7:], max_retries=0)
        completion = answer.chat.completions.create(model=model, messages=PROMPT, max_tokens=20)  # type: ignore[arg-type]
        assert completion.model == model

        removed = http.delete(f"/api/v1/models/{model}", headers=ops)
        assert removed.status_code == 200, removed.text
        assert model not in {e["model"]["id"] for e in removed.json()["models"]}


def test_the_tier_estimate_prices_every_routable_model_and_leaves_out_one_without_a_price(gateway: Gateway) -> None:
    key = {"Authorization": f"Bearer {a_key(gateway, 'org:tiers-' + uuid.uuid4().hex[:6], Role.viewer)}"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        listed = {e["model"]["id"]: e for e in http.get("/api/v1/models", headers=key).json()["models"]}
        assert listed[UNPRICED]["routable"] is False  # cost-predictor published it as not routable
        estimated = http.get("/api/v1/cognitive-tier/estimate-cost", params={"prompt": "What is DNS?"}, headers=key)
    assert estimated.status_code == 200, estimated.text  # not the unpriced model's unknown_price
    priced = {e["model"] for e in estimated.json()["estimates"]}
    assert priced == {m for m, e in listed.items() if e["routable"]}
    assert UNPRICED not in priced and len(priced) > 5
