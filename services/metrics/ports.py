"""What metrics needs of the rest of the system: the price of a baseline call. Handlers see
``Pricer``; ``LocalPricer`` is the real one (the price book of cost-predictor's published catalog,
priced with the function cost-predictor prices with, ``routewise.estimates.price``: no request
per task); tests use an in-memory twin."""

from __future__ import annotations

from typing import Protocol

from routewise.contracts.cost import Price, PriceUsage
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.estimates import price
from routewise.pricing import PriceBook
from routewise.runtime.catalog import CatalogView


class Pricer(Protocol):
    async def price(self, usage: PriceUsage) -> Price:
        """The price of a call; ``RemoteError`` with its code when it has none (``unknown_price``,
        ...) or cannot be asked (``timeout``, ``unavailable``)."""
        ...


class LocalPricer:
    """``Pricer`` over the live catalog's price book (``use``, at each revision)."""

    def __init__(self, view: CatalogView) -> None:
        self.use(view)

    def use(self, view: CatalogView) -> None:
        self.book: PriceBook = view.price_book()

    async def price(self, usage: PriceUsage) -> Price:
        try:
            return price(self.book, usage)
        except RoutewiseError as exc:  # as cost-predictor would have answered it
            raise RemoteError.of(exc) from exc
