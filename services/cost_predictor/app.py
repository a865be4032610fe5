"""cost-predictor's bus adapters: estimate and price requests; learns usage from CostRecorded."""

from __future__ import annotations

from pathlib import Path

from faststream.nats import NatsRouter

from services.cost_predictor.domain import Estimator, check_catalog_priced, price
from shared.bus import reply
from shared.catalog import default_catalog
from shared.db import Connection
from shared.events import CostRecorded
from shared.requests import CostEstimate, EstimateCost, Price, PriceUsage
from shared.service import Runtime, ServiceSpec

NAME = "cost_predictor"


def register(router: NatsRouter, rt: Runtime) -> None:
    catalog = default_catalog()
    check_catalog_priced(catalog)
    estimator = Estimator(catalog)
    subjects = rt.subjects

    async def estimate(request: EstimateCost) -> CostEstimate:
        return estimator.estimate(request)

    async def price_usage(request: PriceUsage) -> Price:
        return price(catalog, request)

    async def on_cost_recorded(conn: Connection, event: CostRecorded) -> None:
        await conn.execute(
            "INSERT INTO observed_usage (event_id, task_id, task_type, model, input_tokens, output_tokens,"
            " cost_usd, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            event.event_id,
            event.task_id,
            event.task_type,
            event.model,
            event.input_tokens,
            event.output_tokens,
            event.cost_usd,
            event.occurred_at,
        )

    reply(router, subjects.cost_estimate, NAME, EstimateCost, estimate)
    reply(router, subjects.cost_price, NAME, PriceUsage, price_usage)
    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost_recorded)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
