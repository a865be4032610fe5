"""Ask cost-predictor, before running anything, what a prompt would cost on a few models, and
what each of the five tiers costs for a token profile.

    ROUTEWISE_NATS_URL=nats://127.0.0.1:PORT uv run python examples/04_estimate_and_compare_tiers.py

Exits 0 when every model was estimated and the five tiers compared, 1 otherwise.
"""

import asyncio
import sys

from routewise.client import RoutewiseClient
from routewise.contracts.cost import CompareTiers, CostEstimate, EstimateCost, TierComparison

PROMPT = "Write a SQL query that finds the top 5 customers by revenue last quarter."
MODELS = ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "deepseek-chat", "gpt-4.1-nano"]


async def main() -> int:
    async with RoutewiseClient() as rw:
        estimate = await rw.request(
            rw.subjects.cost_estimate,
            EstimateCost(prompt=PROMPT, models=MODELS, task_type="code", min_tier="heavy"),
            CostEstimate,
        )
        print(f"what {PROMPT!r} would cost (code task, cheapest first):")
        for e in sorted(estimate.estimates, key=lambda e: e.cost_usd_p50):
            name = e.model if "/" in e.model else f"{e.provider}/{e.model}"  # outside the catalog: provider/model
            tokens = f"{e.input_tokens}" if e.exact_token_count else f"≈{e.input_tokens}"
            print(
                f"  {name:28} tier {e.tier.value if e.tier else '—':9} "
                f"in {tokens:>4}  out p50/p90 {e.output_tokens_p50}/{e.output_tokens_p90} ({e.output_source})  "
                f"${e.cost_usd_p50} / ${e.cost_usd_p90}  [{e.price_source}]"
            )
        if estimate.recommendation:
            print(f"recommended: {estimate.recommendation.model}: {estimate.recommendation.reason}")

        tiers = await rw.request(
            rw.subjects.cost_compare_tiers,
            CompareTiers(input_tokens=2000, output_tokens=500),
            TierComparison,
        )
        print(f"the tiers for {tiers.input_tokens} input and {tiers.output_tokens} output tokens:")
        for t in tiers.tiers:
            print(
                f"  {t.tier.value:9} quality {t.quality_min:.2f}–{t.quality_max:.2f}  "
                f"${t.cost_min_usd} – ${t.cost_max_usd}  {', '.join(t.models)}"
            )

    if len(estimate.estimates) != len(MODELS) or estimate.recommendation is None or len(tiers.tiers) != 5:
        print("expected an estimate per model, a recommendation and five tiers")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
