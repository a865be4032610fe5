"""The contract decoder: a payload that is not its contract is an InvalidMessage, whatever the
validation raised (so it is answered or dead-lettered at once, never retried)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import field_validator

from routewise.contracts.events import Contract
from routewise.runtime.bus import InvalidMessage, decoded


class Fragile(Contract):
    n: int

    @field_validator("n")
    @classmethod
    def _overflow(cls, value: int) -> int:
        if value > 10:
            raise OverflowError("date value out of range")  # as datetime arithmetic raises
        return value


async def decode(body: bytes) -> Any:
    return await decoded(Fragile, SimpleNamespace(data=body, headers={}, subject="fragile"))  # type: ignore[arg-type]


async def test_whatever_validation_raises_the_payload_is_invalid() -> None:
    assert (await decode(b'{"n": 1}')).n == 1
    with pytest.raises(InvalidMessage, match="date value out of range"):
        await decode(b'{"n": 11}')
    with pytest.raises(InvalidMessage):
        await decode(b"[" * 5000 + b"]" * 5000)
