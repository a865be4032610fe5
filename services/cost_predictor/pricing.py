"""Prices live in ``routewise.pricing`` (shared: the gateway prices the calls it carries with the
same book); cost-predictor's modules import them from here as before."""

from routewise.pricing import (
    MILLION,
    USD_QUANTUM,
    Override,
    PriceBook,
    PricedModel,
    PriceSource,
    output_cost,
)

__all__ = ["MILLION", "USD_QUANTUM", "Override", "PriceBook", "PriceSource", "PricedModel", "output_cost"]
