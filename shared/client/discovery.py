"""Where Routewise is: the settings a client uses when it is given none.

``--nats-url`` (or ``nats_url=``), else ``ROUTEWISE_NATS_URL``, else what a running
``routewise dev`` wrote to ``$ROUTEWISE_HOME/dev.json`` (its NATS URL and namespace), else
``nats://127.0.0.1:4222``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from routewise.runtime.settings import DEFAULT_NATS_URL, Settings


def home() -> Path:
    return Path(os.environ.get("ROUTEWISE_HOME") or Path.home() / ".routewise")


def dev_state_path() -> Path:
    return home() / "dev.json"


def read_dev_state() -> dict[str, Any] | None:
    path = dev_state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # left behind by a `routewise dev` that is gone
        except PermissionError:
            pass
    return state


def resolve_settings(nats_url: str | None = None) -> Settings:
    """--nats-url, else ROUTEWISE_NATS_URL, else what `routewise dev` wrote, else the default."""
    overrides: dict[str, Any] = {}
    if nats_url:
        overrides["nats_url"] = nats_url
    elif not os.environ.get("ROUTEWISE_NATS_URL"):
        state = read_dev_state()
        overrides["nats_url"] = state["nats_url"] if state else DEFAULT_NATS_URL
        if state and not os.environ.get("ROUTEWISE_NAMESPACE"):
            overrides["namespace"] = state.get("namespace", "routewise")
    return Settings(**overrides)
