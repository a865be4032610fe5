"""A model registered at run time, served by a gateway that was running already: the official
``openai`` SDK against the gateway's HTTP on a real uvicorn, the services in this process on a
real NATS and Postgres, the mock provider behind every provider (a new one included)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from routewise.dev.mock_provider import MockProvider
from tests.conftest import Database
from tests.system.test_gateway import PROMPT, Gateway, costs_of, serving


@pytest.fixture(scope="module")
def gateway(nats_url: str, database: Database) -> Iterator[Gateway]:
    with MockProvider(seed=11) as mock, serving(nats_url, database, mock) as gateway:
        yield gateway


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
