"""Models registered at run time, over the bus: two replicas of the selector and of cost-predictor
(in the test process; real NATS and Postgres), the CLI as an operator runs it. A model registered
with its own price is routed to on the next task, on every replica, at its price; one without a
price is not routed until it is priced, and does not stop cost-predictor from starting."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.catalog import DEFAULT_CATALOG
from routewise.contracts.events import Constraints, ModelSelected, RejectionReason, Scope, TaskArrived, TaskRejected
from tests.conftest import Database, RunningStack, in_process_stack

SIMPLE = "What is the capital of France?"
MILLION = Decimal(1_000_000)
REPLICAS = {"selector": 2, "cost_predictor": 2, "budget_enforcer": 1, "performance_tracker": 1, "metrics": 1}


@pytest.fixture(scope="module")
def stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    with in_process_stack(nats_url, database, REPLICAS) as s:
        yield s


def a_task(**fields: object) -> TaskArrived:
    """A simple prompt (the micro tier), decided by the complexity strategy: the cheapest candidate
    of the nearest tier among those predicted to meet the task's quality need."""
    scope = Scope(org_id=f"org-{uuid.uuid4().hex[:8]}")
    return TaskArrived(scope=scope, prompt=SIMPLE, strategy="complexity", **fields)  # type: ignore[arg-type]


async def decide_all(stack: RunningStack, tasks: list[TaskArrived]) -> list[ModelSelected | TaskRejected]:
    async with RoutewiseClient(stack.settings) as rw:
        outcomes = await asyncio.gather(*(rw.submit_task(task, wait=20) for task in tasks))
    assert all(o is not None for o in outcomes), "no decision within 20 s"
    return [o for o in outcomes if o is not None]


def cli_json(stack: RunningStack, *args: str) -> dict:  # type: ignore[type-arg]
    result = stack.cli(*args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def register(stack: RunningStack, model: str, *options: str) -> dict:  # type: ignore[type-arg]
    return cli_json(
        stack,
        "models",
        "register",
        model,
        "--provider",
        "mock",
        "--tier",
        "micro",
        "--quality",
        "0.8",
        "--context-window",
        "32000",
        "--by",
        "ops@acme",
        *options,
    )


def listed(stack: RunningStack) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["model"]["id"]: e for e in cli_json(stack, "models", "list")["models"]}


def at_price(selected: ModelSelected, input_mtok: str, output_mtok: str) -> Decimal:
    """The decision's estimate at the model's registered price (per million tokens)."""
    return (
        Decimal(input_mtok) * selected.estimated_input_tokens + Decimal(output_mtok) * selected.estimated_output_tokens
    ) / MILLION


async def test_a_model_registered_with_its_price_is_routed_to_on_the_next_tasks_at_that_price(
    stack: RunningStack,
) -> None:
    model = f"acme-small-{uuid.uuid4().hex[:6]}"
    need = Constraints(min_quality=0.99)  # for this prompt: a prior of 0.8 or more (no micro model has one)
    [before] = await decide_all(stack, [a_task(constraints=need)])
    assert isinstance(before, ModelSelected) and before.tier.rank > 1

    registered = register(stack, model, "--input", "0.001", "--output", "0.002", "--policy", "normal")

    assert registered["policies"] == ["normal"] and registered["model"]["routable"] is True
    # the very next tasks, on either replica of the selector and of cost-predictor
    outcomes = await decide_all(stack, [a_task(constraints=need) for _ in range(8)])
    for outcome in outcomes:
        assert isinstance(outcome, ModelSelected), outcome
        assert (outcome.model, outcome.provider, outcome.tier.value) == (model, "mock", "micro")
        assert outcome.estimated_cost_usd == at_price(outcome, "0.001", "0.002") > 0
        scores = {c.model: c.estimated_cost_usd for c in outcome.candidates}
        assert scores[model] == min(scores.values()) < scores[before.model]  # the cheapest that meets the need
    for replica in (0, 1):  # every replica routes with it
        assert stack.system.deps("selector", replica).catalog.get(model) is not None  # type: ignore[union-attr]

    # a task whose quality need it does not meet (its prior is 0.8) goes elsewhere
    [demanding] = await decide_all(stack, [a_task(constraints=Constraints(min_quality=0.995))])
    assert isinstance(demanding, ModelSelected) and demanding.model != model
    assert model not in {c.model for c in demanding.candidates}

    entry = listed(stack)[model]
    assert entry["source"] == "registered" and entry["routable"] is True
    assert entry["registered_by"] == "ops@acme"
    assert (entry["price"]["input_mtok"], entry["price"]["output_mtok"]) == ("0.001", "0.002")

    removed = cli_json(stack, "models", "remove", model, "--by", "ops@acme")
    assert model not in {e["model"]["id"] for e in removed["models"]}
    [after] = await decide_all(stack, [a_task(constraints=need)])
    assert isinstance(after, ModelSelected) and after.model == before.model  # the policy skips it now


def test_a_model_genai_prices_does_not_know_needs_a_price_to_be_registered(stack: RunningStack) -> None:
    model = f"acme-small-{uuid.uuid4().hex[:6]}"
    result = stack.cli("models", "register", model, "--provider", "mock", "--tier", "micro", "--quality", "0.9",
                       "--context-window", "32000", "--json")  # fmt: skip
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unknown_price" and "register it with its price" in error["message"]
    assert model not in listed(stack)


@pytest.fixture
def unpriced_catalog(tmp_path: Path) -> tuple[Path, str]:
    """The shipped catalog with one more model, which no price database knows."""
    model = f"acme-private-{uuid.uuid4().hex[:6]}"
    extra = (
        f'\n[[models]]\nid = "{model}"\nprovider = "mock"\ntier = "micro"\n'
        "quality_prior = 0.9\ncontext_window = 32000\n"
    )
    path = tmp_path / "models.toml"
    path.write_text(DEFAULT_CATALOG.read_text() + extra)
    return path, model


def test_cost_predictor_starts_with_a_catalog_model_without_a_price_which_is_routable_once_priced(
    nats_url: str, database: Database, unpriced_catalog: tuple[Path, str]
) -> None:
    path, model = unpriced_catalog
    services = {"selector": 1, "cost_predictor": 1, "budget_enforcer": 1, "performance_tracker": 1}
    with in_process_stack(nats_url, database, services, extra_env={"ROUTEWISE_CATALOG_PATH": str(path)}) as stack:
        entry = listed(stack)[model]  # cost-predictor started, and answers
        assert entry["routable"] is False and entry["source"] == "shipped"
        assert f"routewise prices set {model} --provider mock" in entry["reason"]
        forced = Constraints(allowed_models=[model])
        [refused] = asyncio.run(decide_all(stack, [a_task(constraints=forced)]))
        assert isinstance(refused, TaskRejected), refused
        assert refused.reason is RejectionReason.no_model_within_constraints
        assert "has a price" in refused.detail and "routewise prices set" in refused.detail

        priced = stack.cli("prices", "set", model, "--provider", "mock", "--input", "0.001", "--output", "0.002")
        assert priced.returncode == 0, priced.stdout + priced.stderr

        [selected] = asyncio.run(decide_all(stack, [a_task(constraints=forced)]))
        assert isinstance(selected, ModelSelected) and selected.model == model
        assert selected.estimated_cost_usd == at_price(selected, "0.001", "0.002")
        assert listed(stack)[model]["routable"] is True
