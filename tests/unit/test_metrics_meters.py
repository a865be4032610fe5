"""The metrics service's Prometheus meters keep a bounded set of labels."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from routewise.contracts.catalog import default_catalog
from routewise.contracts.events import CostRecorded, Scope
from routewise.services.metrics.meters import Meters


def a_cost(model: str, amount: str) -> CostRecorded:
    return CostRecorded(
        task_id=uuid.uuid4(),
        scope=Scope(org_id="acme"),
        model=model,
        provider="openai",
        input_tokens=10,
        output_tokens=10,
        cost_usd=Decimal(amount),
    )


def test_costs_of_models_outside_the_catalog_share_one_label() -> None:
    registry = CollectorRegistry()
    meters = Meters(registry, default_catalog())
    meters.cost(a_cost("gpt-4o", "0.5"))
    for i in range(50):  # an application inventing model names must not grow the series
        meters.cost(a_cost(f"acme-finetune-{i}", "0.01"))
    samples = {
        s.labels["model"]: s.value
        for family in registry.collect()
        if family.name == "routewise_actual_cost_usd"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert samples == pytest.approx({"gpt-4o": 0.5, "other": 0.5})
