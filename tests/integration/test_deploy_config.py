"""docker-compose.yml and deploy/ cannot rot: checked against the code (Docker does not run
here), and the NATS config is booted for real with nats-server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import pytest
import yaml

from routewise.contracts.subjects import SERVICES
from routewise.dev.embedded import free_port, nats_server_binary, wait_for_port
from routewise.dev.provision import DEPLOY_SQL, role_for
from routewise.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SETTINGS_FIELDS = {f"ROUTEWISE_{name.upper()}" for name in Settings.model_fields}


def compose_service(name: str) -> dict[str, Any]:
    return COMPOSE["services"][name.replace("_", "-")]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_its_own_module_with_valid_settings(service: str) -> None:
    spec = compose_service(service)
    assert spec["command"] == ["python", "-m", f"routewise.services.{service}"]
    assert importlib.util.find_spec(f"routewise.services.{service}.__main__") is not None
    env = spec["environment"]
    unknown = {k for k in env if k.startswith("ROUTEWISE_")} - SETTINGS_FIELDS
    assert not unknown, f"{service} sets variables Settings does not read: {unknown}"
    Settings.model_validate(
        {k.removeprefix("ROUTEWISE_").lower(): v for k, v in env.items() if k.startswith("ROUTEWISE_")}
    )
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / spec["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_connects_as_its_own_role_to_the_compose_database(service: str) -> None:
    env = compose_service(service)["environment"]
    dsn = urlsplit(env["ROUTEWISE_DATABASE_URL"])
    postgres = COMPOSE["services"]["postgres"]
    assert dsn.hostname == "postgres"
    assert dsn.username == role_for(service)
    assert dsn.path == "/" + postgres["environment"]["POSTGRES_DB"]
    assert dsn.password == role_for(service)  # the dev password deploy/postgres sets


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_traced_to_jaeger_and_health_checked(service: str) -> None:
    spec = compose_service(service)
    env = spec["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert f"localhost:{env['ROUTEWISE_HTTP_PORT']}/readyz" in " ".join(spec["healthcheck"]["test"])
    assert env["ROUTEWISE_HTTP_HOST"] == "0.0.0.0"
    assert spec["depends_on"]["nats"]["condition"] == "service_healthy"
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_infrastructure_services() -> None:
    services = COMPOSE["services"]
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    assert list(DEPLOY_SQL.glob("*.sql")), "deploy/postgres has no SQL to initialise the database"
    assert {"16686:16686", "4317:4317", "4318:4318"} <= set(services["jaeger"]["ports"])
    assert "healthcheck" in services["nats"] and "healthcheck" in services["postgres"]


def test_the_compose_nats_config_boots_with_jetstream_and_service_users(tmp_path: Path) -> None:
    """Run the real nats-server on deploy/nats/nats.conf: only its users log in; the operator uses JetStream."""
    nats_spec = COMPOSE["services"]["nats"]
    env = dict(os.environ, **nats_spec["environment"])
    # the compose command, with the container paths mapped to this machine
    mounts = dict(v.split(":")[:2][::-1] for v in nats_spec["volumes"] if v.startswith("./"))
    command = list(nats_spec["command"])
    for inside, outside in mounts.items():
        command = [str(ROOT / outside) + a.removeprefix(inside) if a.startswith(inside) else a for a in command]
    command = [str(tmp_path) if a == "/data/jetstream" else a for a in command]
    port, monitor = free_port(), free_port()
    log = tmp_path / "nats-server.log"
    proc = subprocess.Popen(
        [nats_server_binary(), *command, "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-l", str(log)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 15, proc)
        import asyncio

        async def use_jetstream() -> None:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(
                    f"nats://127.0.0.1:{port}",
                    user="selector",
                    password="wrong",
                    max_reconnect_attempts=0,
                    connect_timeout=2,
                    allow_reconnect=False,
                )
            for service in SERVICES:  # each service logs in as itself (what it may do: test_bus_auth)
                env_vars = compose_service(service)["environment"]
                nc = await nats.connect(
                    f"nats://127.0.0.1:{port}",
                    user=env_vars["ROUTEWISE_NATS_USER"],
                    password=env_vars["ROUTEWISE_NATS_PASSWORD"],
                )
                await nc.close()
            operator = await nats.connect(
                f"nats://127.0.0.1:{port}", user="operator", password=nats_spec["environment"]["NATS_OPERATOR_PASSWORD"]
            )
            try:
                js = operator.jetstream()
                name = f"CHECK_{uuid.uuid4().hex[:6]}"
                await js.add_stream(name=name, subjects=[f"routewise.check.{name}"])
                ack = await js.publish(f"routewise.check.{name}", b"ok")
                assert ack.stream == name
                await js.delete_stream(name)
            finally:
                await operator.close()

        varz = httpx.get(f"http://127.0.0.1:{monitor}/varz", timeout=5).json()
        assert varz["jetstream"]["config"]["sync_always"] is True  # acked writes survive a power loss
        try:
            asyncio.run(use_jetstream())
        except nats.errors.Error as exc:  # say why the server refused, from its own log
            raise AssertionError(f"{exc}; the server's log ends:\n{log.read_text()[-3000:]}") from exc
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_service_image_installs_the_services_without_the_embedded_servers() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    syncs = [line for line in dockerfile.splitlines() if "uv sync" in line]
    assert syncs and all("--extra server" in line and "--no-dev" in line for line in syncs)
    assert "--all-extras" not in dockerfile and "--extra dev" not in dockerfile
