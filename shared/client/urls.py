"""NATS URLs as they may be shown: never with the password a locked server's URL carries."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def url_without_password(url: str) -> str:
    """``nats://operator:secret@host:4222`` as ``nats://host:4222`` (a URL without credentials as it is)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}")) if parts.username else url
