"""Where each provider is and how to call it: a registry from configuration, and one call.

Every provider is reached over the OpenAI-compatible chat-completions protocol (OpenAI, Anthropic,
Google, DeepSeek, Groq, Mistral, OpenRouter, vLLM and Ollama all serve it) with the official
``openai`` client, one per provider, its own retries off (the gateway's retry is the decision's
fallback chain). The registry comes from ``ROUTEWISE_PROVIDERS_PATH`` (TOML) when set::

    [providers.openai]
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"          # the variable holding the key (never the key itself)
    [providers.openai.models]                # catalog id -> the provider's name (default: the same)
    "gpt-4o" = "gpt-4o-2024-08-06"

Otherwise every provider of the catalog is at its public URL, or, when
``ROUTEWISE_PROVIDER_BASE_URL`` is set, all of them at that one URL (the mock provider).
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field

PUBLIC_PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ("https://api.anthropic.com/v1/", "ANTHROPIC_API_KEY"),
    "google": ("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
}
"""Each known provider's OpenAI-compatible base URL and the variable its key is read from."""

SHARED_KEY_ENV = "ROUTEWISE_PROVIDER_API_KEY"
"""The key sent to ``ROUTEWISE_PROVIDER_BASE_URL`` (a mock or a local server needs none)."""


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, max_length=2000)
    api_key_env: str | None = Field(default=None, max_length=200)
    models: dict[str, str] = Field(default_factory=dict)
    """Catalog id -> the provider's model name (default: the catalog id)."""


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderConfig]


@dataclass(frozen=True)
class Provider:
    name: str
    config: ProviderConfig
    client: openai.AsyncOpenAI

    def model_name(self, model: str) -> str:
        return self.config.models.get(model, model)


@dataclass(frozen=True)
class Registry:
    providers: Mapping[str, Provider] = field(default_factory=dict)

    def get(self, name: str) -> Provider | None:
        return self.providers.get(name)

    def with_providers(self, added: Registry) -> Registry:
        """This registry and ``added``'s providers (a provider this one has is kept as it is)."""
        return Registry({**added.providers, **self.providers})

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.client.close()


def load_configs(path: str | None, base_url: str | None, catalog_providers: Iterable[str]) -> dict[str, ProviderConfig]:
    """The providers' configuration: the file's, else one URL for all, else the public ones."""
    if path:
        with Path(path).open("rb") as fh:
            return dict(ProvidersFile.model_validate(tomllib.load(fh)).providers)
    names = sorted(set(catalog_providers))
    if base_url:
        return {name: ProviderConfig(base_url=base_url, api_key_env=SHARED_KEY_ENV) for name in names}
    configs = {}
    for name in names:
        url, key_env = PUBLIC_PROVIDERS.get(name, (None, None))
        if url is not None:
            configs[name] = ProviderConfig(base_url=url, api_key_env=key_env)
    return configs


def build_registry(configs: Mapping[str, ProviderConfig], timeout: float) -> Registry:
    providers = {}
    for name, config in configs.items():
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=key or "none",  # a mock or a local server takes any key; a real one answers 401
            max_retries=0,
            timeout=openai.Timeout(timeout, connect=min(timeout, 5.0)),
        )
        providers[name] = Provider(name, config, client)
    return Registry(providers)


# --- one call's outcome ---------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A provider call that did not answer: whether the next model may be tried, and what the
    provider said (its status and body are returned to the client when it is not retryable)."""

    error_type: str
    retryable: bool
    detail: str
    status: int | None = None
    body: Any = None
    usage: Mapping[str, Any] | None = None
    """Usage the provider reported with its error, if any: it is charged."""


RETRYABLE_STATUS = frozenset({408, 409, 429})


def classify(exc: Exception) -> Failure:
    """A provider's failure as the gateway treats it: 429, 408/409, 5xx, a timeout or a lost
    connection are retryable (the next model of the fallback chain); any other status is the
    client's to see (a 400 stays a 400) and is not retried."""
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", True, str(exc) or "the provider did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return Failure("connection_error", True, str(exc) or "the provider could not be reached")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body
        usage = body.get("usage") if isinstance(body, dict) else None
        if status == 429:
            kind = "rate_limited"
        elif status >= 500:
            kind = "server_error"
        else:
            kind = f"http_{status}"
        return Failure(
            kind,
            status in RETRYABLE_STATUS or status >= 500,
            exc.message[:2000],
            status=status,
            body=body,
            usage=usage if isinstance(usage, dict) else None,
        )
    return Failure(type(exc).__name__, True, str(exc)[:2000] or type(exc).__name__)


def now_ms() -> float:
    return time.perf_counter() * 1000
