"""`routewise dev` as a user meets it: start, use from other commands, a service killed and
restarted, stop cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

pytestmark = pytest.mark.e2e


def routewise(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routewise.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
    env.update({"ROUTEWISE_HOME": str(home), "COLUMNS": "200"})
    return env


def test_dev_runs_the_demo_other_commands_find_it_a_killed_service_restarts_ctrl_c_stops_all(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    # started the way a shell starts a background job: with SIGINT ignored
    dev = subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {sys.executable} -m routewise.cli dev --demo'],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    state_file = tmp_path / "dev.json"
    lines: list[str] = []
    assert dev.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(dev.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 150
        while not any("Ctrl-C stops everything" in line for line in lines):  # started, and the demo ran
            assert dev.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "routewise dev did not become ready:\n" + "".join(lines)
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        # no --nats-url, no ROUTEWISE_NATS_URL: the commands read what `routewise dev` wrote
        decided = routewise("task", "Explain DNS in one sentence", "--org", "acme", "--json", env=env)
        assert decided.returncode == 0, decided.stderr
        decision = json.loads(decided.stdout)
        assert decision["status"] == "selected"
        recorded = routewise(
            "record",
            decision["task_id"],
            "--input-tokens",
            "20",
            "--output-tokens",
            "80",
            "--cost",
            "0.0004",
            "--json",
            env=env,
        )
        assert recorded.returncode == 0, recorded.stderr
        assert json.loads(recorded.stdout)["cost_usd"] == "0.0004"
        # the gateway, with the development key it printed, through the official OpenAI SDK
        key = re.search(r"Development key .*: (rw_[0-9a-f]{16}_[A-Za-z0-9_-]+)", "".join(lines))
        assert key is not None and state["mock_provider_url"], "".join(lines)
        client = OpenAI(base_url=f"{state['gateway_url']}/v1", api_key=key.group(1), max_retries=0)
        answer = client.chat.completions.with_raw_response.create(
            model="routewise/auto", messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
        )
        assert answer.parse().choices[0].message.content and answer.headers["x-routewise-cost-usd"]
        assert f"curl {state['gateway_url']}/v1/chat/completions -H 'Authorization: Bearer {key.group(1)}'" in "".join(
            lines
        )
        assert routewise("dev", env=env).returncode == 1  # a second `dev` refuses to start
        # a normal start (and use) logs nothing at ERROR (FastStream's pull loop used to, at every start)
        for log in (tmp_path / "dev" / "logs").glob("*.log"):
            errors = [line for line in log.read_text().splitlines() if '"level": "error"' in line]
            assert errors == [], f"{log.name}: {errors[:3]}"
        # a service killed -9 is restarted on its port; the others are left alone
        pids = service_pids(dev.pid)
        assert sorted(pids) == sorted(state["services"])
        os.kill(pids["budget_enforcer"], signal.SIGKILL)
        while not any("budget_enforcer is ready again" in line for line in lines):
            assert dev.poll() is None, "".join(lines)
            assert time.monotonic() < deadline + 120, "budget_enforcer did not come back:\n" + "".join(lines)
            time.sleep(0.2)
        output = "".join(lines)
        assert "budget_enforcer stopped (exit -9); see " in output
        assert "restarting in 1 s" in output
        assert "could not start" not in output
        port = state["services"]["budget_enforcer"]
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        again = service_pids(dev.pid)
        assert again["budget_enforcer"] != pids["budget_enforcer"]
        assert {n: p for n, p in again.items() if n != "budget_enforcer"} == {
            n: p for n, p in pids.items() if n != "budget_enforcer"
        }
        decided = routewise("task", "And what is TCP?", "--org", "acme", "--json", env=env)  # reserves a budget
        assert decided.returncode == 0, decided.stderr
        assert json.loads(decided.stdout)["status"] == "selected"
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
        reader.join(10)
    output = "".join(lines)
    assert dev.returncode == 0, output
    assert "Routewise is running" in output
    # the demo: three requests through the gateway, and what budget-enforcer and metrics saw
    assert re.search(r"org demo-[0-9a-f]{6} has spent \$0\.\d+ over 3 calls", output), output
    assert "3 selected, 0 rejected" in output
    assert "stopped." in output
    assert not state_file.exists()
    for port in state["services"].values():  # every service process is gone
        probe = subprocess.run(
            ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
            capture_output=True,
            check=False,
        )
        assert probe.returncode != 0


def service_pids(parent: int) -> dict[str, int]:
    """The service processes ``routewise dev`` (pid ``parent``) runs, by service."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        module = next((a.decode() for a in cmdline if a.startswith(b"routewise.services.")), None)
        if ppid == parent and module:
            found[module.removeprefix("routewise.services.")] = int(stat.parent.name)
    return found


def test_without_a_bus_the_cli_says_so(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    result = routewise("task", "hello", "--nats-url", "nats://127.0.0.1:1", "--json", env=env, timeout=30)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unavailable"
    assert "cannot reach NATS at nats://127.0.0.1:1" in error["message"]
