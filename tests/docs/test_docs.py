"""The code a newcomer reads runs: every examples/*.py script and every ```python block of the
README, each as its own process against a running Routewise (the services in this test process,
on a real NATS and Postgres, the gateway's HTTP on a real server with a key, a mock provider
behind it), as a user would run them after `routewise dev`."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.gateway import CreateKey, KeyCreated
from routewise.dev.mock_provider import MockProvider
from tests.conftest import Database, RunningStack
from tests.system.test_gateway import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@dataclass
class Readers:
    """Routewise as a reader has it after `routewise dev`: the bus, and the gateway with a key."""

    stack: RunningStack
    env: dict[str, str]


@pytest.fixture(scope="module")
def readers(nats_url: str, database: Database) -> Iterator[Readers]:
    with MockProvider(seed=3) as mock, serving(nats_url, database, mock) as gateway:
        key = asyncio.run(a_key(gateway.stack))
        env = {**gateway.stack.cli_env(), "OPENAI_BASE_URL": f"{gateway.url}/v1", "OPENAI_API_KEY": key}
        yield Readers(gateway.stack, env)


async def a_key(stack: RunningStack) -> str:
    async with RoutewiseClient(stack.settings) as rw:
        created = await rw.request(
            rw.subjects.keys_create, CreateKey(scope="org:readers", name="docs", actor="docs"), KeyCreated
        )
    return created.key


def run_script(readers: Readers, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=readers.env,
        cwd=ROOT,
        timeout=90,
        check=False,
    )


def test_there_are_numbered_examples_and_a_readme_snippet() -> None:
    assert len(EXAMPLES) >= 5
    assert README_BLOCKS


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_an_example_runs_and_succeeds(readers: Readers, script: Path) -> None:
    result = run_script(readers, script.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "an example says what it did"


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_the_readme_code_runs(readers: Readers, index: int) -> None:
    result = run_script(readers, README_BLOCKS[index])
    assert result.returncode == 0, result.stdout + result.stderr
