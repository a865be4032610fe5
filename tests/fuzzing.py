"""What the bus fuzz sends (tests/system/test_fuzz.py), as hypothesis strategies:

- ``targets``: every subject a service consumes (its table's ``events``) or answers (its
  ``requests``), with the contract the runtime validates it against: walked from the tables as
  the runtime's router walks them, so a new subject is fuzzed without editing the test;
- ``from_schema``: JSON values drawn from a contract's JSON schema (``model_json_schema()``);
  hypothesis-jsonschema does not run on the hypothesis this project locks, and the contracts use
  a small part of JSON schema: ``$ref``, ``anyOf``, ``enum``, objects, arrays, bounded strings
  with a pattern or a format (uuid, date-time), bounded numbers, pydantic's Decimal (a number or
  a string);
- ``mutated`` and ``raw_payloads``: payloads built to hurt: JSON nested 1,500 levels, NUL in
  strings, huge numbers (1e308, 10**40, -1, "NaN"), strings of 100 KB, wrong types, missing and
  extra fields, timestamps past the range, bytes that are not JSON (or not UTF-8), the empty
  payload;
- ``payloads``: a subject's lot, the same on every run (hypothesis, derandomized).
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel

from routewise.contracts.events import Event
from routewise.contracts.subjects import SERVICES, Subjects
from routewise.runtime.inprocess import service
from routewise.runtime.service import Answer, _first_parameter_type, _return_type

Json = Any
Strategy = st.SearchStrategy[Any]


# --- what is consumed and answered ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A subject and the contract its consumers or responder validate."""

    subject: str
    contract: type[BaseModel]
    consumers: tuple[str, ...]
    """The services that consume it (an event: each applies it or dead-letters it) or answer it."""
    reply: type[BaseModel] | None = None
    """A request's answer (None: an event)."""

    @property
    def is_event(self) -> bool:
        return self.reply is None

    def subject_for(self, subjects: Subjects, body: bytes) -> str:
        """Where a payload is sent. Events of an org travel on ``<subject>.<org>`` (consumed as
        ``<subject>.*``): the org the body names, so that what the contract takes is applied (a
        cost of another org than its subject's is refused), or ``fuzz`` when it names none."""
        if not self.is_event or "*" not in self.subject:
            return self.subject
        org: Any = None
        with contextlib.suppress(Exception):  # anything at all: nested past the recursion limit, not UTF-8
            org = json.loads(body)["scope"]["org_id"]
        if not isinstance(org, str) or not 0 < len(org) <= 128:
            org = "fuzz"
        return subjects.for_org(getattr(self.contract, "SUBJECT", ""), org)


def targets(subjects: Subjects) -> list[Target]:
    """Every consumed event subject and every answered request subject of every service."""
    events: dict[type[Event], list[str]] = {}
    requests: list[Target] = []
    for name in SERVICES:
        table = service(name)
        for event_type in table.events:
            events.setdefault(event_type, []).append(name)
        for subject_name, entry in table.requests.items():
            handler = entry.handler if isinstance(entry, Answer) else entry
            requests.append(
                Target(
                    getattr(subjects, subject_name),
                    _first_parameter_type(handler),
                    (name,),
                    _return_type(handler),
                )
            )
    consumed = [Target(subjects.of(kind), kind, tuple(names)) for kind, names in events.items()]
    return sorted(consumed, key=lambda t: t.subject) + sorted(requests, key=lambda t: t.subject)


# --- values from a JSON schema ---------------------------------------------------------------

LONGEST_DRAWN = 40
"""Strings and lists drawn from a schema stay short (long ones are the hostile values' job)."""

TIME_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12, minutes=30))])
EDGE_TIMES = st.sampled_from(
    ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:30", "9999-12-31T23:59:59Z"]
)
"""The first and last instants a date-time can name, with the offsets that push them past the range."""


_NON_BLANK = st.text(min_size=1, max_size=LONGEST_DRAWN).filter(str.strip)
HINTS: dict[str, Strategy] = {
    "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"]),
    "prompt": _NON_BLANK,
    "content": _NON_BLANK,
}
"""Values for fields whose rule the JSON schema cannot say (an IANA time zone, text that is not
blank), so that more of the drawn documents are valid; hostile values still go anywhere."""


def from_schema(schema: dict[str, Any]) -> Strategy:
    """JSON values drawn from ``schema`` (a pydantic model's ``model_json_schema()``)."""
    return _Schema(schema.get("$defs", {})).strategy(schema)


class _Schema:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.refs: dict[str, Strategy] = {}

    def strategy(self, node: dict[str, Any]) -> Strategy:
        if "$ref" in node:
            return self._ref(node["$ref"].rsplit("/", 1)[-1])
        if "const" in node:
            return st.just(node["const"])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                return st.one_of([self._option(option, node[key]) for option in node[key]])
        if "allOf" in node:
            merged: dict[str, Any] = {}
            for part in node["allOf"]:
                merged |= part
            return self.strategy(merged)
        kind = node.get("type")
        if isinstance(kind, list):
            return st.one_of([self.strategy({**node, "type": k}) for k in kind])
        draw = _BY_TYPE.get(kind) if isinstance(kind, str) else None
        if draw is None:
            return _any_json
        return draw(self, node)

    def _ref(self, name: str) -> Strategy:
        if name not in self.refs:  # deferred: a schema may refer to itself
            self.refs[name] = st.deferred(lambda: self.strategy(self.defs[name]))
        return self.refs[name]

    def _option(self, option: dict[str, Any], siblings: list[dict[str, Any]]) -> Strategy:
        """pydantic's Decimal is ``anyOf: [number, string]``: its string is a decimal numeral."""
        numbers = [s for s in siblings if s.get("type") == "number"]
        if option == {"type": "string"} and numbers:
            return _decimals(numbers[0]).map(str) | st.text(max_size=8)
        return self.strategy(option)

    def object(self, node: dict[str, Any]) -> Strategy:
        properties: dict[str, Any] = node.get("properties", {})
        required = set(node.get("required", []))
        fields = {k: self._hinted(k, v) for k, v in properties.items() if k in required}
        optional = {k: self._or_default(self._hinted(k, v), v) for k, v in properties.items() if k not in required}
        if not properties and node.get("additionalProperties") is not False:
            return st.dictionaries(st.text(max_size=8), _scalars, max_size=3)
        return st.fixed_dictionaries(fields, optional=optional)

    def _hinted(self, name: str, node: dict[str, Any]) -> Strategy:
        if name not in HINTS:
            return self.strategy(node)
        nullable = any(option.get("type") == "null" for option in node.get("anyOf", []))
        return st.none() | HINTS[name] if nullable else HINTS[name]

    @staticmethod
    def _or_default(drawn: Strategy, node: dict[str, Any]) -> Strategy:
        """An optional field given: its default as often as anything else (``schema_version`` 1)."""
        return st.just(node["default"]) | drawn if "default" in node else drawn

    def array(self, node: dict[str, Any]) -> Strategy:
        items = self.strategy(node.get("items", {}))
        low = node.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(node.get("maxItems", 4), 4)))

    def string(self, node: dict[str, Any]) -> Strategy:
        fmt = node.get("format")
        if fmt == "uuid":
            return st.uuids().map(str)
        if fmt == "date-time":
            return st.datetimes(timezones=TIME_ZONES).map(lambda d: d.isoformat()) | EDGE_TIMES
        if fmt == "date":
            return st.dates().map(lambda d: d.isoformat())
        low, high = node.get("minLength", 0), node.get("maxLength", LONGEST_DRAWN)
        high = max(low, min(high, LONGEST_DRAWN))
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return st.text(min_size=low, max_size=high)

    def integer(self, node: dict[str, Any]) -> Strategy:
        low = node.get("minimum", node["exclusiveMinimum"] + 1 if "exclusiveMinimum" in node else None)
        high = node.get("maximum", node["exclusiveMaximum"] - 1 if "exclusiveMaximum" in node else None)
        return st.integers(min_value=low, max_value=high)

    def number(self, node: dict[str, Any]) -> Strategy:
        return st.floats(
            min_value=node.get("minimum", node.get("exclusiveMinimum")),
            max_value=node.get("maximum", node.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in node and "minimum" not in node,
            exclude_max="exclusiveMaximum" in node and "maximum" not in node,
            allow_nan=False,
            allow_infinity=False,
        ) | _decimals(node).map(float)


def _decimals(node: dict[str, Any]) -> Strategy:
    """Decimal numerals within the node's bounds (up to a million), with 0 to 12 places."""
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    above = node.get("exclusiveMinimum")
    drawn = st.integers(0, 12).flatmap(
        lambda places: st.decimals(
            min_value=None if low is None else Decimal(str(low)),
            max_value=Decimal(10) ** 6 if high is None else Decimal(str(high)),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    return drawn if above is None else drawn.filter(lambda d: d > Decimal(str(above)))


_BY_TYPE: dict[str, Callable[[_Schema, dict[str, Any]], Strategy]] = {
    "object": _Schema.object,
    "array": _Schema.array,
    "string": _Schema.string,
    "integer": _Schema.integer,
    "number": _Schema.number,
    "boolean": lambda _, __: st.booleans(),
    "null": lambda _, __: st.none(),
}

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_any_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


# --- hostile values and payloads ---------------------------------------------------------------

DEEP = 1_500
"""Levels of nesting: past the 1,000 a JSON decoder commonly allows."""


DEEP_NESTING = "\ufffedeeply nested\ufffe"
"""Stands for JSON nested ``DEEP`` levels (too deep for ``json.dumps``: put in by ``_dumps``)."""
_DEEP_TEXT = '{"a": [' * (DEEP // 2) + '"bottom"' + "]}" * (DEEP // 2)


HOSTILE_VALUES: dict[str, Json] = {
    "nul": "a\x00b",
    "only_nul": "\x00",
    "string_100kb": "x" * 100_000,
    "huge_float": 1e308,
    "huge_int": 10**40,
    "negative": -1,
    "negative_huge": -(10**40),
    "nan_string": "NaN",
    "infinity_string": "Infinity",
    "overflow_string": "1e999",
    "huge_decimal_string": "9" * 60 + "." + "9" * 30,
    "empty_string": "",
    "blank_string": "   ",
    "null": None,
    "true": True,
    "list": [1, "two", None],
    "object": {"unexpected": ["shape"]},
    "deep_nesting": DEEP_NESTING,
    "not_a_uuid": "not-a-uuid",
    "far_past": "0001-01-01T00:00:00+05:00",
    "far_future": "9999-12-31T23:59:59-05:00",
    "no_time_zone": "2025-01-01T00:00:00",
    "lone_surrogate": "\ud800",
    "tiny_float": 5e-324,
    "negative_zero": -0.0,
    "control_chars": "\x01\x02\x1b[31m\u202e\ufeff",
    "subject_tokens": "a.b.*.>",
}
"""Values put in place of a field (or of the whole message)."""

RAW_PAYLOADS: dict[str, bytes] = {
    "empty": b"",
    "not_json": b"this is not json",
    "not_utf8": b"\xff\xfe\xfd\x00\x80",
    "truncated": b'{"scope": {"org_id": "a"',
    "json_null": b"null",
    "json_list": b"[]",
    "json_number": b"42",
    "json_string": b'"hello"',
    "nan_token": b'{"x": NaN}',
    "nul_byte": b'{"x": \x00}',
    "deep_lists": b"[" * DEEP + b"]" * DEEP,
    "deep_objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "invalid_utf8_in_string": b'{"x": "\xc3\x28"}',
}
"""Payloads sent to every subject as they are."""


@dataclass(frozen=True)
class Payload:
    kind: str
    """``valid`` (the contract takes it), ``schema`` (drawn from the schema), ``replace:<value>``,
    ``extra:<value>``, ``missing:<field>``, ``raw:<name>`` or ``whole:<name>``."""
    body: bytes


def _paths(value: Json, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every place in a JSON document a value can be put, the whole document last."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*prefix, i))
    yield prefix


def _replaced(doc: Json, path: tuple[str | int, ...], value: Json) -> Json:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replaced(doc[head], rest, value)}
    copy = list(doc)
    copy[int(head)] = _replaced(doc[int(head)], rest, value)
    return copy


def _dumps(doc: Json) -> bytes:
    return json.dumps(doc).replace(json.dumps(DEEP_NESTING), _DEEP_TEXT).encode()


@st.composite
def mutated(draw: st.DrawFn, valid: Strategy, required: list[str]) -> Payload:
    """A document from the schema with one thing made hostile: a value anywhere replaced by a
    hostile one, a required field missing, or an extra field."""
    doc = draw(valid)
    how = draw(st.sampled_from(["replace", "replace", "replace", "missing", "extra"]))
    if how == "missing" and isinstance(doc, dict) and required:
        field = draw(st.sampled_from(required))
        return Payload(f"missing:{field}", _dumps({k: v for k, v in doc.items() if k != field}))
    name = draw(st.sampled_from(sorted(HOSTILE_VALUES)))
    if how == "extra" and isinstance(doc, dict):
        key = draw(st.sampled_from(["extra", "\x00", "__proto__", "x" * 300]))
        return Payload(f"extra:{name}", _dumps({**doc, key: HOSTILE_VALUES[name]}))
    path = draw(st.sampled_from(list(_paths(doc))))
    return Payload(f"replace:{name}", _dumps(_replaced(doc, path, HOSTILE_VALUES[name])))


VALID_TRIES = 4
"""Documents drawn for each valid one: the first the contract takes."""


def accepts(contract: type[BaseModel], body: bytes) -> bool:
    """Whether ``contract`` takes ``body`` (what a consumer's decoder decides first)."""
    try:
        contract.model_validate_json(body)
    except Exception:  # a ValidationError, or a validator that failed otherwise: not taken either way
        return False
    return True


def payloads(contract: type[BaseModel], count: int) -> list[Payload]:
    """``count`` payloads for a subject, the same on every run: a quarter documents the contract
    takes, a quarter documents drawn from its schema (some break a rule across fields the schema
    cannot say, such as "exactly one of prompt or messages"), half hostile mutations of those."""
    schema = contract.model_json_schema()
    drawn = from_schema(schema)
    valid = (
        st.lists(drawn, min_size=VALID_TRIES, max_size=VALID_TRIES)
        .map(lambda docs: next((d for d in docs if accepts(contract, _dumps(d))), None))
        .filter(lambda doc: doc is not None)
    )
    quarter = max(1, count // 4)
    return [
        *(Payload("valid", _dumps(doc)) for doc in examples(valid, quarter)),
        *(Payload("schema", _dumps(doc)) for doc in examples(drawn, quarter)),
        *examples(mutated(drawn, list(schema.get("required", []))), count - 2 * quarter),
    ]


def examples(strategy: Strategy, count: int) -> list[Any]:
    """``count`` values of ``strategy``, the same on every run (derandomized): drawn up front, so
    the whole lot can be sent at once and every outcome checked after."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    with contextlib.suppress(Unsatisfiable):  # what could be drawn (a contract hard to satisfy: fewer)
        collect()
    return drawn


def raw_payloads() -> list[Payload]:
    return [Payload(f"raw:{name}", body) for name, body in RAW_PAYLOADS.items()] + [
        Payload("whole:deep_nesting", _DEEP_TEXT.encode()),
        Payload("whole:string_100kb", _dumps("x" * 100_000)),
        Payload("whole:printable", string.printable.encode()),
    ]
