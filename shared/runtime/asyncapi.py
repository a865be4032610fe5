"""Each service's AsyncAPI document, generated from its table (the typed subscribers and the
events it publishes), checked in under docs/asyncapi/: the one description of the contracts.

python -m routewise.runtime.asyncapi          # rewrite docs/asyncapi/
python -m routewise.runtime.asyncapi --check  # exit 1 if the documents drifted from the code
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from faststream.specification import AsyncAPI
from opentelemetry.sdk.trace import TracerProvider

from routewise.contracts.subjects import SERVICES
from routewise.runtime.inprocess import service
from routewise.runtime.service import build_runtime
from routewise.runtime.settings import Settings

DOC_DIR = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"


def document(name: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service, for the default namespace."""
    settings = Settings(database_url="postgresql://unused/for-documents", namespace="routewise")
    rt = build_runtime(service(name), settings, tracer_provider=TracerProvider())
    spec = AsyncAPI(rt.broker, title=f"routewise {name}", version="1", schema_version="3.0.0")
    doc: dict[str, Any] = spec.to_specification().to_jsonable()
    doc.pop("servers", None)  # where the bus is belongs to a deployment, not the contract
    return _one_event_per_message(doc)


def _one_event_per_message(doc: dict[str, Any]) -> dict[str, Any]:
    """A batch consumer's handler takes a list of events (FastStream documents its payload as an
    array), but each message it consumes is one event: its payload is documented as the event."""
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    batches = {
        name: schema["items"]
        for name, schema in schemas.items()
        if name.endswith(":Message:Payload") and schema.get("type") == "array"
    }
    for message in doc.get("components", {}).get("messages", {}).values():
        name = unquote(message.get("payload", {}).get("$ref", "").rsplit("/", 1)[-1])
        if name in batches:
            message["payload"] = batches[name]
    for name in batches:
        del schemas[name]
    return doc


def render() -> dict[str, str]:
    """{file name: document text} for every service."""
    return {f"{name}.json": json.dumps(document(name), indent=2, sort_keys=True) + "\n" for name in SERVICES}


def drift(folder: Path = DOC_DIR) -> list[str]:
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


def write(folder: Path = DOC_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for stale in {p.name for p in folder.glob("*.json")} - wanted.keys():
        (folder / stale).unlink()
    for name, text in wanted.items():
        (folder / name).write_text(text)


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = drift()
        if problems:
            print(
                "docs/asyncapi drifted from the code (run `python -m routewise.runtime.asyncapi`):",
                *problems,
                sep="\n  ",
            )
            return 1
        print(f"docs/asyncapi matches the code ({len(SERVICES)} services)")
        return 0
    write()
    print(f"wrote {len(SERVICES)} documents to {DOC_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
