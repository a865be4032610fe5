"""The selector prices a decision itself, with cost-predictor's function over what cost-predictor
publishes: the same estimate as ``cost.estimate`` would answer, learnt profiles included."""

from __future__ import annotations

import pytest

from routewise.contracts.cost import EstimateCost, OutputProfiles
from routewise.contracts.errors import RemoteError
from routewise.estimates import Estimator, observe
from routewise.runtime.catalog import CatalogView
from routewise.services.selector.ports import LocalQuotes


def learnt(tokens: int, n: int = 200) -> list[float]:
    counts: list[float] = []
    for _ in range(n):
        counts = observe(counts, tokens)
    return counts


async def test_a_local_quote_is_the_estimate_cost_predictor_would_answer() -> None:
    view = CatalogView.seed()
    quotes = LocalQuotes(view)
    ask = EstimateCost(prompt="Explain TCP slow start", models=["gpt-4o", "gpt-4o-mini"], task_type="code")
    estimator = Estimator(view.price_book())
    assert await quotes.estimate(ask) == estimator.estimate(ask, estimator.resolve_all(ask.models), {})

    profile = learnt(1500)
    quotes.put("code", OutputProfiles(task_type="code", models={"gpt-4o": profile}).model_dump_json().encode())
    mine = await quotes.estimate(ask)
    theirs = estimator.estimate(ask, estimator.resolve_all(ask.models), {"gpt-4o": profile})
    assert mine == theirs
    by_model = {e.model: e for e in mine.estimates}
    assert by_model["gpt-4o"].output_source == "learned" and by_model["gpt-4o-mini"].output_source == "prior"

    quotes.put("code", b'{"task_type": "code", "models": {"gpt-4o": "not a histogram"}}')  # kept: the last good
    assert await quotes.estimate(ask) == theirs
    quotes.put("code", None)  # deleted: the prior again
    assert {e.output_source for e in (await quotes.estimate(ask)).estimates} == {"prior"}


async def test_a_model_without_a_price_is_refused_as_cost_predictor_refuses_it() -> None:
    quotes = LocalQuotes(CatalogView.seed())
    with pytest.raises(RemoteError) as refused:
        await quotes.estimate(EstimateCost(prompt="hi", models=["no-such-model"]))
    assert refused.value.code == "unknown_price"  # no price, never free
