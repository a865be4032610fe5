"""Each service's AsyncAPI document, generated from its table, shows the real payload of every
message it consumes, publishes and answers; the checked-in documents match the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routewise.contracts.subjects import SERVICES
from routewise.runtime.asyncapi import document, drift, render
from routewise.runtime.inprocess import service
from routewise.runtime.service import _first_parameter_type, _return_type
from routewise.runtime.settings import Settings


def messages_by_channel(doc: dict[str, Any]) -> dict[str, str]:
    """{channel title: payload schema title} of every message in the document."""
    found = {}
    for key, message in doc["components"]["messages"].items():
        payload = message["payload"]
        ref = payload.get("$ref", "")
        found[key.rsplit(":", 1)[0]] = ref.rsplit("/", 1)[-1] if ref else payload.get("title", "")
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_every_message_a_service_consumes_answers_and_publishes_has_its_contract_schema(name: str) -> None:
    table = service(name)
    subjects = Settings().subjects
    doc = document(name)
    channels = messages_by_channel(doc)
    schemas = doc["components"]["schemas"]

    wanted = {f"{name}:{subjects.of(event)}": event.__name__ for event in table.events}
    for subject_name, entry in table.requests.items():
        handler = getattr(entry, "handler", entry)
        subject = getattr(subjects, subject_name)
        wanted[f"{name}:{subject}"] = _first_parameter_type(handler).__name__
        wanted[f"{name}:{subject}:reply"] = _return_type(handler).__name__
    wanted.update({f"{name}:{subjects.of(event)}:publish": event.__name__ for event in table.publishes})

    assert {k: channels.get(k) for k in wanted} == wanted
    for contract in wanted.values():
        assert schemas[contract]["type"] == "object", contract  # the contract's own JSON schema


def test_the_checked_in_documents_match_the_code() -> None:
    assert drift() == [], "run `python -m routewise.runtime.asyncapi` and commit docs/asyncapi/"


def test_drift_is_detected(tmp_path: Path) -> None:
    for name, text in render().items():
        (tmp_path / name).write_text(text)
    assert drift(tmp_path) == []
    (tmp_path / "selector.json").write_text("{}")
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "metrics.json").unlink()
    assert sorted(drift(tmp_path)) == ["changed: selector.json", "extra: old.json", "missing: metrics.json"]
