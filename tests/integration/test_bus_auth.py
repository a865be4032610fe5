"""The bus, locked: with `routewise dev`'s configuration and compose's, booted on a real nats-server,
each user can do its job and nothing else. A tenant (an org's applications, `routewise bus-user
create`) cannot forge a decision, an alert or a budget change, cannot touch another org's subjects,
and nobody but the operator can delete a stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
import yaml
from nats.aio.client import Client

from routewise.client import RoutewiseClient
from routewise.client.wire import msg_id_headers
from routewise.contracts.budget import BudgetList, ListBudgets
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import CostRecorded, CostReported, ModelSelected, Scope, TaskArrived
from routewise.contracts.subjects import Subjects
from routewise.contracts.vocabulary import ErrorCode
from routewise.dev.embedded import EmbeddedNats, free_port, nats_server_binary, wait_for_port
from routewise.runtime.bus_users import OPERATOR, new_password, operator_url, service_users, tenant_user
from routewise.runtime.inprocess import in_process
from routewise.runtime.settings import Settings
from routewise.runtime.streams import ensure_streams
from tests.conftest import Database, run_cli
from tests.helpers import a_cost

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "routewise"  # the configurations are rendered for the real namespace, as deployed
S = Subjects(NAMESPACE)
DENIED_WAIT = 0.5


@dataclass
class Server:
    url: str
    passwords: dict[str, str]
    users_file: Path
    reload: object = None
    errors: list[str] = field(default_factory=list)

    async def add_tenant(self, org: str) -> str:
        """`routewise bus-user create --org ORG --users-file …`, then the server reloads; the password."""
        result = run_cli(["bus-user", "create", "--org", org, "--users-file", str(self.users_file), "--json"], {})
        assert result.returncode == 0, result.stderr + result.stdout
        created = json.loads(result.stdout)
        assert created["user"] == tenant_user(org)
        self.reload()  # type: ignore[operator]
        password = str(created["password"])
        await self._until_accepted(created["user"], password)
        return password

    async def _until_accepted(self, user: str, password: str) -> None:
        """The server reloads its users within milliseconds of SIGHUP: wait until it has."""
        for _ in range(50):
            try:
                nc = await nats.connect(
                    self.url, user=user, password=password, allow_reconnect=False, connect_timeout=1
                )
            except (OSError, nats.errors.Error):
                await asyncio.sleep(0.1)
                continue
            await nc.close()
            return
        raise AssertionError(f"the server never accepted {user}")

    @asynccontextmanager
    async def connect(self, user: str, password: str | None = None) -> AsyncIterator[tuple[Client, list[str]]]:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(
            self.url,
            user=user,
            password=password or self.passwords[user],
            inbox_prefix=Settings(nats_user=None if user == OPERATOR else user).nats_inbox_prefix,
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=5,
        )
        try:
            yield nc, errors
        finally:
            await nc.close()


@contextmanager
def dev_server(tmp: Path) -> Iterator[Server]:
    """`routewise dev`'s server: EmbeddedNats with the operator and the services' users."""
    password = new_password()
    users = service_users(password, NAMESPACE)
    server = EmbeddedNats(tmp / "nats", durable=False, users=users)
    server.start()
    try:
        yield Server(server.url, {u.name: u.password for u in users}, server.users_path, server.reload)
    finally:
        server.stop()


@contextmanager
def compose_server(tmp: Path) -> Iterator[Server]:
    """deploy/nats/nats.conf and users.conf as compose runs them (a copy: tenants are added to it)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = dict(os.environ, **compose["services"]["nats"]["environment"])
    conf = tmp / "nats"
    conf.mkdir()
    for name in ("nats.conf", "users.conf"):
        (conf / name).write_text((ROOT / "deploy" / "nats" / name).read_text())
    port, monitor = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *(nats_server_binary(), "-c", str(conf / "nats.conf"), "-sd", str(tmp / "js"), "-a", "127.0.0.1"),
            *("-p", str(port), "-m", str(monitor), "-l", str(tmp / "nats.log")),
        ],
        env=env,
    )
    try:
        wait_for_port("127.0.0.1", port, 15, proc)
        passwords = {k.removeprefix("NATS_").removesuffix("_PASSWORD").lower(): v for k, v in env.items()}
        yield Server(
            f"nats://127.0.0.1:{port}", passwords, conf / "users.conf", lambda: proc.send_signal(signal.SIGHUP)
        )
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["dev", "compose"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    with (dev_server if request.param == "dev" else compose_server)(tmp_path) as running:
        async with running.connect(OPERATOR) as (nc, _):
            await ensure_streams(nc.jetstream(), Settings(namespace=NAMESPACE))  # the operator may do anything
        yield running


def task(org: str) -> TaskArrived:
    return TaskArrived(scope=Scope(org_id=org), prompt="hello")


async def stored(nc: Client, subject: str, data: bytes, headers: dict[str, str] | None = None) -> bool:
    """Published on ``subject`` and acknowledged by its stream (False: refused, no ack came)."""
    try:
        await nc.jetstream().publish(subject, data, headers=headers, timeout=DENIED_WAIT)
    except (TimeoutError, nats.errors.Error):
        return False
    return True


async def subscribed(nc: Client, errors: list[str], subject: str) -> bool:
    """Subscribed to ``subject`` (False: the server refused the subscription)."""
    await nc.subscribe(subject)
    await nc.flush()
    await asyncio.sleep(0.1)
    return not any(f'permissions violation for subscription to "{subject.lower()}"' in e for e in errors)


def reported(cost: CostRecorded) -> CostReported:
    return CostReported.model_validate(cost.model_dump(exclude={"self_priced", "reported_event_id"}))


def event_bytes(event: TaskArrived | CostRecorded | CostReported) -> tuple[bytes, dict[str, str]]:
    return event.model_dump_json().encode(), msg_id_headers(event)


async def test_a_tenant_publishes_and_reads_only_its_own_orgs_subjects(server: Server) -> None:
    password = await server.add_tenant("acme")
    await server.add_tenant("other")
    async with server.connect(tenant_user("acme"), password) as (nc, errors):
        mine, theirs = task("acme"), task("other")
        assert await stored(nc, S.event(mine), *event_bytes(mine))
        cost = reported(a_cost(Scope(org_id="acme"), "0.001"))
        assert await stored(nc, S.event(cost), *event_bytes(cost))
        recorded = a_cost(Scope(org_id="acme"), "0.001")
        forged = await asyncio.gather(
            stored(nc, S.event(theirs), *event_bytes(theirs)),  # another org's task
            stored(nc, S.event(recorded), *event_bytes(recorded)),  # a cost nobody checked
            stored(
                nc, S.for_org("cost_reported", "other"), *event_bytes(reported(a_cost(Scope(org_id="other"), "0.001")))
            ),
            stored(nc, S.for_org("model_selected", "acme"), b"{}"),  # a decision, even for its own org
            stored(nc, S.budget_alert("org", "acme"), b"{}"),  # an alert
            stored(nc, S.task_arrived, *event_bytes(mine)),  # the bare subject an older release used
        )
        assert forged == [False] * 6
        with pytest.raises((TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(S.budget_create, b"{}", timeout=DENIED_WAIT)  # a budget change
        assert any(S.budget_create in e for e in errors)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await nc.jetstream(timeout=DENIED_WAIT).delete_stream(S.events_stream.name)

        assert await subscribed(nc, errors, S.for_org("model_selected", "acme"))
        assert await subscribed(nc, errors, S.org_alerts("acme"))
        for other in (S.for_org("model_selected", "other"), S.org_alerts("other"), S.of(ModelSelected)):
            assert not await subscribed(nc, errors, other), other

    async with server.connect(OPERATOR) as (nc, _):
        js = nc.jetstream()
        events = await js.stream_info(S.events_stream.name, subjects_filter=">")
        tasks = await js.stream_info(S.tasks_stream.name, subjects_filter=">")
        assert (events.state.subjects or {}) == {S.for_org("cost_reported", "acme"): 1}  # nothing forged got in
        assert (tasks.state.subjects or {}) == {S.for_org("task_arrived", "acme"): 1}


async def test_an_org_id_cannot_reach_another_orgs_subjects(server: Server) -> None:
    """`a.b` is one escaped token: org `a`'s user cannot read `a.b`'s alerts or decisions, and ids
    that are not one (`*`, `>`, a space) are refused."""
    password_a = await server.add_tenant("a")
    password_ab = await server.add_tenant("a.b")
    assert tenant_user("a.b") == "org_a=2Eb"
    async with server.connect(tenant_user("a"), password_a) as (nc, errors):
        assert not await subscribed(nc, errors, S.org_alerts("a.b"))
        assert not await subscribed(nc, errors, S.for_org("model_selected", "a.b"))
        assert not await stored(nc, S.event(task("a.b")), *event_bytes(task("a.b")))
    async with server.connect(tenant_user("a.b"), password_ab) as (nc, errors):
        assert await subscribed(nc, errors, S.org_alerts("a.b"))
        assert await stored(nc, S.event(task("a.b")), *event_bytes(task("a.b")))
    for bad in ("a*", "a>", "a b"):
        refused = run_cli(["bus-user", "create", "--org", bad, "--users-file", str(server.users_file)], {})
        assert refused.returncode == 1 and "org_id" in refused.stderr, refused.stderr


async def test_each_service_user_does_its_job_and_nothing_else(server: Server) -> None:
    decision = S.for_org("model_selected", "acme")
    async with server.connect("selector") as (nc, errors):
        assert await stored(nc, decision, b"{}", {"Nats-Msg-Id": str(uuid.uuid4())})  # its own event
        cost = a_cost(Scope(org_id="acme"), "0.001")
        assert not await stored(nc, S.event(cost), *event_bytes(cost))  # another's
        assert not await stored(nc, S.budget_alert("org", "acme"), b"{}")
        assert not await subscribed(nc, errors, S.budget_create)  # answering another's requests
        assert not await subscribed(nc, errors, S.of(TaskArrived))  # reading prompts outside JetStream
        assert await subscribed(nc, errors, S.routing_decide)  # its own
    async with server.connect("budget_enforcer") as (nc, errors):
        assert not await stored(nc, decision, b"{}", {"Nats-Msg-Id": str(uuid.uuid4())})
        assert await subscribed(nc, errors, S.budget_create)
    async with server.connect(OPERATOR) as (nc, _):
        prompt = task("acme")
        data, headers = event_bytes(prompt)
        await nc.jetstream().publish(S.event(prompt), data, headers=headers)
    for service in ("selector", "budget_enforcer", "gateway", "metrics"):
        async with server.connect(service) as (nc, _):
            js = nc.jetstream(timeout=DENIED_WAIT)
            done = await asyncio.gather(
                js.delete_stream(S.events_stream.name),
                js.purge_stream(S.tasks_stream.name),
                js.get_msg(S.tasks_stream.name, seq=1),  # a prompt, read around the consumers
                js.add_consumer(S.tasks_stream.name, durable_name=f"{service}-spy"),  # a consumer of its own
                return_exceptions=True,
            )
            assert all(isinstance(d, (TimeoutError, nats.errors.Error)) for d in done), (service, done)
    async with server.connect(OPERATOR) as (nc, _):
        assert (await nc.jetstream().stream_info(S.events_stream.name)).config.name == S.events_stream.name
        assert (await nc.jetstream().stream_info(S.tasks_stream.name)).state.messages == 1


async def test_an_application_with_its_orgs_credentials_routes_and_records_through_the_sdk(
    tmp_path: Path, database: Database
) -> None:
    """The services under their own users, the application under its org's: a task decided, its
    cost checked and recorded, another org's task refused by the server."""
    with dev_server(tmp_path) as srv:
        password = await srv.add_tenant("acme")
        operator = Settings(nats_url=operator_url(srv.url, srv.passwords[OPERATOR]), namespace=NAMESPACE)
        async with in_process(operator, database.dsns, ("selector", "cost_predictor", "budget_enforcer")):
            app = Settings(nats_url=srv.url, namespace=NAMESPACE, nats_user=tenant_user("acme"), nats_password=password)
            async with RoutewiseClient(app) as rw:
                decision = await rw.submit_task(task("acme"), wait=15)
                assert isinstance(decision, ModelSelected), decision
                cost = CostReported(
                    task_id=decision.task_id,
                    scope=decision.scope,
                    model=decision.model,
                    provider=decision.provider,
                    input_tokens=decision.estimated_input_tokens,
                    output_tokens=decision.estimated_output_tokens,
                    cost_usd=decision.estimated_cost_usd,  # what its tokens cost: plausible
                )
                verdict = await rw.record_cost(cost, wait=15)
                assert isinstance(verdict, CostRecorded) and verdict.cost_usd == cost.cost_usd, verdict
                with pytest.raises(RemoteError) as refused:
                    await rw.submit_task(task("other"), wait=2)  # the server takes no task of another org
                assert refused.value.code == ErrorCode.forbidden and "org_acme may not send" in refused.value.message
                with pytest.raises(RemoteError) as refused:  # nor any request: budgets are the operator's
                    await rw.request(rw.subjects.budget_list, ListBudgets(), BudgetList, timeout=1)
                assert refused.value.code == ErrorCode.forbidden
