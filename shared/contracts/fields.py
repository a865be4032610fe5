"""Bounded field types the request contracts share: every string and number has a bound."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, PlainSerializer

from routewise.contracts.events import ModelName, Usd, fixed_point

MAX_TOKENS = 10_000_000
ModelId = ModelName


ModelRef = Annotated[str, Field(min_length=1, max_length=200)]
"""``model`` or ``provider/model``; providers' aliases and dated ids are understood."""
ProviderId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
PerMillion = Annotated[
    Decimal,
    Field(ge=0, le=100_000, max_digits=20, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""USD per million tokens."""
Actor = Annotated[str, Field(min_length=1, max_length=128)]
"""Who made a change (recorded in audit rows)."""
PositiveUsd = Annotated[Usd, Field(gt=0)]


def _known_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from exc
    return value


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_time_zone)]
