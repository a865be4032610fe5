"""Token counts with a real BPE (bpe-openai): one rule for every part of Routewise that counts.

The cost predictor estimates with it, and what answers over HTTP (the mock provider, the
gateway when a provider reports no usage) counts with the same rule, so their figures agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Protocol

import bpe_openai

# OpenAI's chat format adds a few tokens per message and primes the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

MIN_CACHED_PREFIX = 1024
"""Providers cache a prompt prefix from about 1,024 tokens on (OpenAI's minimum; Anthropic's and
Google's are 1,024 or more): a shorter conversation prefix is priced as fresh input."""


class Message(Protocol):
    """A chat message as far as counting goes (``ChatMessage`` is one)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@cache
def encoding(name: str) -> bpe_openai.Encoding:
    return bpe_openai.get_encoding(name)


def openai_encoding(model_name: str) -> str:
    """The encoding an OpenAI model name uses: cl100k for GPT-4 and GPT-3.5, o200k since GPT-4o."""
    name = model_name.rpartition("/")[2]
    legacy = name.startswith(("gpt-4-", "gpt-3.5")) or name == "gpt-4"
    return "cl100k_base" if legacy else "o200k_base"


def encoding_for_model(provider: str, model_id: str) -> tuple[str, bool]:
    """(encoding name, exact?): OpenAI models are counted exactly, others with o200k, approximately."""
    if provider == "openai":
        return openai_encoding(model_id), True
    return "o200k_base", False


def count_text(text: str, encoding_name: str) -> int:
    return len(encoding(encoding_name).encode(text))


def count_tokens(text: str | None, messages: Sequence[Message] | None, encoding_name: str) -> int:
    return token_counts(text, messages, encoding_name)[0]


def token_counts(text: str | None, messages: Sequence[Message] | None, encoding_name: str) -> tuple[int, int]:
    """Input tokens, and those of a conversation before its last user message — what a
    provider's prompt cache holds from the previous turn (0 below ``MIN_CACHED_PREFIX``)."""
    enc = encoding(encoding_name)
    if messages is None:
        return len(enc.encode(text or "")), 0
    per_message = [TOKENS_PER_MESSAGE + len(enc.encode(m.role)) + len(enc.encode(m.content)) for m in messages]
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
    prefix = sum(per_message[:last_user])
    return TOKENS_REPLY_PRIMING + sum(per_message), prefix if prefix >= MIN_CACHED_PREFIX else 0
