"""Prompts kept out of what outlives a task's decision (``ROUTEWISE_REDACT_PROMPTS``).

"The prompt" is every text the application sent to be routed: a TaskArrived's ``prompt``, and the
``content`` of each of its ``messages`` (their roles are kept). A redacted text becomes
``{"redacted": {"sha256": <hex of its UTF-8>, "chars": <its length>}}``: enough to tell whether a
dead letter is the task one knows (hash the text one has), never the text itself. Fields that are
not the contract's (a malformed task may carry text anywhere) are redacted as well, and a payload
that is not a JSON object as a whole (``"bytes"`` instead of ``"chars"``); the contract's other
fields (ids, scope, task type, policy, constraints, routing options) are kept as sent, so one can
still tell whose task it was and why it failed.

A redacted value is an object where the contract wants a string, so a redacted TaskArrived can
never pass for a task: ``routewise deadletters replay`` refuses it (``Routewise-Redacted``), and
published again by other means it is dead-lettered as ``invalid_message``, never decided on a hash.
Redaction runs only when a task is dead-lettered, never on the path of a task that is decided.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

KEPT_FIELDS = frozenset(
    {
        "event_id",
        "occurred_at",
        "schema_version",
        "task_id",
        "scope",
        "task_type",
        "policy",
        "constraints",
        "auto_route",
        "strategy",
        "quality_bias",
    }
)
"""TaskArrived's fields that are not the prompt, kept in a redacted dead letter."""

_INPUT_VALUE = re.compile(r"input_value=.*, input_type=")


def redacted_text(text: str) -> dict[str, Any]:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"redacted": {"sha256": digest, "chars": len(text)}}


def redacted_bytes(data: bytes) -> dict[str, Any]:
    return {"redacted": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}


def redact_task(data: bytes) -> bytes:
    """A TaskArrived payload (valid or not) without its prompt text."""
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise TypeError("not a JSON object")
        kept = {key: _redact_field(key, value) for key, value in payload.items()}
        return json.dumps(kept, ensure_ascii=False).encode()
    except (ValueError, TypeError, RecursionError):  # unreadable: nothing of it can be told safe
        return json.dumps(redacted_bytes(data)).encode()


def _redact_field(key: str, value: Any) -> Any:
    if key in KEPT_FIELDS:
        return value
    if key == "messages" and isinstance(value, list):
        return [_redact_message(message) for message in value]
    if isinstance(value, str):
        return redacted_text(value)
    return redacted_bytes(json.dumps(value, ensure_ascii=False).encode())


def _redact_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return _redact_field("", message)
    return {
        key: value if key == "role" and isinstance(value, str) and len(value) <= 32 else _redact_field("", value)
        for key, value in message.items()
    }


def redact_error(text: str) -> str:
    """An error's text without the input pydantic quotes in it (``input_value=...``: the start of a
    prompt, or of a whole payload)."""
    return _INPUT_VALUE.sub("input_value=<redacted>, input_type=", text)
