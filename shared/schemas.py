"""JSON Schemas of the event and request contracts, checked in under docs/schemas/.

python -m shared.schemas          # rewrite docs/schemas/
python -m shared.schemas --check  # exit 1 if they drifted from the code
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from shared import requests
from shared.events import EVENT_TYPES, Contract

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def contracts() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {cls.__name__: cls for cls in EVENT_TYPES}
    for name in dir(requests):
        obj = getattr(requests, name)
        if isinstance(obj, type) and issubclass(obj, Contract) and obj.__module__ == requests.__name__:
            found[name] = obj
    return found


def render() -> dict[str, str]:
    """{file name: schema text} for every contract."""
    out = {}
    for name, cls in sorted(contracts().items()):
        schema = cls.model_json_schema(mode="validation")
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def drift(folder: Path = SCHEMA_DIR) -> list[str]:
    """Files that differ from, are missing from, or are extra to what the code says."""
    wanted = render()
    present = {p.name for p in folder.glob("*.json")} if folder.exists() else set()
    problems = [f"extra: {n}" for n in sorted(present - wanted.keys())]
    for name, text in wanted.items():
        path = folder / name
        if not path.exists():
            problems.append(f"missing: {name}")
        elif path.read_text() != text:
            problems.append(f"changed: {name}")
    return problems


def write(folder: Path = SCHEMA_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for stale in {p.name for p in folder.glob("*.json")} - wanted.keys():
        (folder / stale).unlink()
    for name, text in wanted.items():
        (folder / name).write_text(text)


if __name__ == "__main__":
    if "--check" in sys.argv:
        problems = drift()
        print("\n".join(problems) or "schemas up to date")
        sys.exit(1 if problems else 0)
    write()
    print(f"wrote {len(render())} schemas to {SCHEMA_DIR}")
