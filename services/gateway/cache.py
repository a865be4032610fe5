"""The response cache's rules, free of I/O: when a request uses it, its key, and a stored answer
replayed as a stream (or a stream assembled into an answer to store).

Exact match only. The key is the SHA-256 of a canonical JSON (sorted keys, no spaces) of:

- ``org``: the API key's org (one org never reads another's answers; the org is also a column
  checked on every read);
- ``target``: the request's ``model`` as resolved — ``routewise/auto``, ``routewise/<policy>`` or
  the forced catalog model id;
- ``messages``: the messages as sent;
- ``routewise``: Routewise's knobs (task type, quality bias, max cost, min quality, allowed
  providers, strategy), wherever they came from (body, metadata, headers): they choose the model;
- ``params``: every other request field, as sent (``temperature``, ``top_p``, ``max_tokens``,
  ``max_completion_tokens``, ``tools``, ``tool_choice``, ``response_format``, ``seed``, ``stop``,
  ``n``, ``logprobs``, ``presence_penalty``, ... and any provider extension), except the fields
  that do not change the answer: ``stream``, ``stream_options``, ``user``, ``metadata`` (its
  ``routewise_*`` knobs are in ``routewise``), ``routewise`` and ``store``.

A parameter the gateway does not know is in the key: an unknown field can only make a miss, never
a wrong hit. A stream and a plain request for the same answer share a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from routewise.services.gateway.domain import Knobs

NOT_IN_KEY = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata", "routewise", "store"})
"""Request fields outside ``params``: ``model`` and ``messages`` are keyed on their own, the others
do not change the answer."""
KEY_VERSION = 1
Status = Literal["hit", "miss", "off"]


def wanted(knobs: Knobs, org_id: str, default_orgs: Iterable[str]) -> bool:
    """Whether the request uses the cache: as it asks (``X-Routewise-Cache: use``/``no``, the
    ``cache`` knob), else as its org is configured (``ROUTEWISE_GATEWAY_CACHE_ORGS``)."""
    if knobs.cache is not None:
        return knobs.cache
    return org_id in set(default_orgs)


def key_of(org_id: str, target: str, body: Mapping[str, Any], knobs: Knobs) -> bytes:
    """The request's cache key (32 bytes): see the module's docstring for what it covers."""
    material = {
        "v": KEY_VERSION,
        "org": org_id,
        "target": target,
        "messages": body.get("messages"),
        "routewise": knobs.model_dump(mode="json", exclude={"cache"}, exclude_none=True),
        "params": {k: v for k, v in body.items() if k not in NOT_IN_KEY},
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).digest()


def encoded_size(answer: Mapping[str, Any]) -> int:
    return len(json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode())


# --- streams --------------------------------------------------------------------------------


def replay(answer: Mapping[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """A stored answer as the chunks of a stream (OpenAI's ``chat.completion.chunk``): per choice
    its role and content, then its finish reason; the usage chunk last when the client asked for it."""
    base = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    if answer.get("system_fingerprint") is not None:
        base["system_fingerprint"] = answer["system_fingerprint"]
    chunks: list[dict[str, Any]] = []
    for choice in answer.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta = {k: v for k, v in message.items() if v is not None}
        chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append(
            {**base, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]}
        )
    if include_usage and answer.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return chunks


@dataclass
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Assembler:
    """A stream's chunks folded into the answer a plain request would have got, to store it. Only
    plain text answers are assembled: a chunk with tool calls, a refusal or logprobs makes the
    stream not cacheable (its answer is not stored)."""

    choices: dict[int, _Choice] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    cacheable: bool = True

    def add(self, chunk: Mapping[str, Any]) -> None:
        if not self.cacheable:
            return
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for raw in chunk.get("choices") or []:
            self._add_choice(raw)

    def _add_choice(self, raw: Mapping[str, Any]) -> None:
        delta = raw.get("delta") or {}
        if raw.get("logprobs") is not None or any(v for k, v in delta.items() if k not in ("role", "content")):
            self.cacheable = False
            return
        choice = self.choices.setdefault(int(raw.get("index") or 0), _Choice())
        if isinstance(delta.get("role"), str):
            choice.role = delta["role"]
        if isinstance(delta.get("content"), str):
            choice.content.append(delta["content"])
        if raw.get("finish_reason") is not None:
            choice.finish_reason = raw["finish_reason"]

    def answer(self) -> dict[str, Any] | None:
        """The assembled answer, or None when it is not a complete, plain one (a choice without its
        finish reason: the stream was cut short)."""
        if not self.cacheable or not self.choices or any(c.finish_reason is None for c in self.choices.values()):
            return None
        answer: dict[str, Any] = {
            "id": self.head.get("id"),
            "object": "chat.completion",
            "created": self.head.get("created"),
            "model": self.head.get("model"),
            "choices": [
                {
                    "index": index,
                    "message": {"role": c.role, "content": "".join(c.content)},
                    "finish_reason": c.finish_reason,
                }
                for index, c in sorted(self.choices.items())
            ],
        }
        if self.head.get("system_fingerprint") is not None:
            answer["system_fingerprint"] = self.head["system_fingerprint"]
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer
