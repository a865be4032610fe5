"""The code a newcomer reads runs: every examples/*.py script and every ```python block of the
README, each as its own process against a running Routewise (the five services in this test
process, on a real NATS and Postgres), as a user would run them after `routewise dev`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningStack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def run_script(stack: RunningStack, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=stack.cli_env(),
        cwd=ROOT,
        timeout=90,
        check=False,
    )


def test_there_are_numbered_examples_and_a_readme_snippet() -> None:
    assert len(EXAMPLES) >= 5
    assert README_BLOCKS


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_an_example_runs_and_succeeds(running_stack: RunningStack, script: Path) -> None:
    result = run_script(running_stack, script.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "an example says what it did"


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_the_readme_code_runs(running_stack: RunningStack, index: int) -> None:
    result = run_script(running_stack, README_BLOCKS[index])
    assert result.returncode == 0, result.stdout + result.stderr
