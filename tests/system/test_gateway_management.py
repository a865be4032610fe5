"""The management and reporting API over HTTP, end to end: the services in this process on a real
NATS and Postgres, the gateway on a real uvicorn, httpx as the client, the mock provider behind it.

The authorization matrix: every route the gateway serves, called with an admin, a member and a
viewer key of the scope that holds the resource, of another org, and of a sibling team. Every cell
is asserted (the status, the error's shape, and that a key outside the scope reads nothing of it);
a route the gateway serves without a row here fails the suite."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from pydantic import BaseModel
from starlette.routing import compile_path

from routewise.client import RoutewiseClient
from routewise.contracts.api import ROUTES
from routewise.contracts.budget import (
    AlertHistory,
    Budget,
    BudgetAuditLog,
    BudgetStatus,
    CreateBudget,
    GetBudgetStatus,
    ListAlerts,
    ListBudgetAudit,
)
from routewise.contracts.catalog import ModelEntry, RegisterModel
from routewise.contracts.cost import CostAdjustmentList, ListCostAdjustments, PriceEntry, SetPrice
from routewise.contracts.events import Tier
from routewise.contracts.gateway import CreateKey, Role
from routewise.contracts.routing import SetTierPreferences, TierPreferences, TierPreferencesReply
from routewise.dev.mock_provider import MockProvider
from routewise.services.gateway import keys
from tests.conftest import Database, run_cli
from tests.helpers import eventually
from tests.system.test_gateway import Gateway, serving

R = TypeVar("R", bound=BaseModel)
PROMPT = [{"role": "user", "content": "What is DNS? One sentence."}]


def _hex() -> str:
    return uuid.uuid4().hex[:6]


@dataclass
class World:
    """Three orgs (acme; globex, another; ops, the operator org), teams platform and research of
    acme, a key of each kind and role, and acme/platform's things: a budget that has fired an
    alert, a task answered through the gateway, a workspace's tier preferences."""

    gateway: Gateway
    acme: str = field(default_factory=lambda: f"acme-{_hex()}")
    globex: str = field(default_factory=lambda: f"globex-{_hex()}")
    ops: str = field(default_factory=lambda: f"ops-{_hex()}")
    team: str = field(default_factory=lambda: f"platform-{_hex()}")
    sibling: str = field(default_factory=lambda: f"research-{_hex()}")
    adjusted: str = field(default_factory=lambda: f"adjusted-{_hex()}")
    """A team of acme whose task's cost the matrix adjusts."""
    gated: str = field(default_factory=lambda: f"gated-{_hex()}")
    """An org whose budget's approval gate holds its tasks back."""
    keys: dict[tuple[str, Role], tuple[str, str]] = field(default_factory=dict)
    budget_id: str = ""
    task_id: str = ""

    @property
    def team_scope(self) -> str:
        return f"{self.acme}/{self.team}"

    @property
    def workspace(self) -> str:
        return f"{self.acme}/ws"

    def scope_text(self, kind: str) -> str:
        return {
            "org": f"org:{self.acme}",
            "team": f"org:{self.acme}/team:{self.team}",
            "sibling": f"org:{self.acme}/team:{self.sibling}",
            "other": f"org:{self.globex}",
            "ops": f"org:{self.ops}",
            "ops_team": f"org:{self.ops}/team:platform",
            "user": f"org:{self.acme}/team:{self.team}/user:ana",
            "lone": f"org:{self.acme}/user:bo",
            "adjusted": f"org:{self.acme}/team:{self.adjusted}",
            "gated": f"org:{self.gated}",
            "gated_team": f"org:{self.gated}/team:{self.team}",
        }[kind]

    def new_key(self, scope: str, role: Role, name: str) -> tuple[str, str]:
        """(key, id), made as ``routewise keys create`` makes it."""
        deps = self.gateway.stack.system.deps("gateway")  # type: ignore[union-attr]

        async def create() -> tuple[str, str]:
            async with deps.transaction() as uow:
                made = await keys.insert_key(
                    uow.conn, CreateKey(scope=scope, role=role, name=name, actor="test"), deps.clock()
                )
            return made.key, made.id

        result: tuple[str, str] = self.gateway.run(create())
        return result

    def key(self, kind: str, role: Role) -> str:
        if (kind, role) not in self.keys:
            self.keys[kind, role] = self.new_key(self.scope_text(kind), role, f"{kind}-{role.value}")
        return self.keys[kind, role][0]

    def http(self, kind: str, role: Role) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key(kind, role)}"}
        return httpx.Client(base_url=self.gateway.url, headers=headers, timeout=30)

    def bus(self, subject: str, payload: BaseModel, reply: type[R]) -> R:
        """A request on the bus, as the operator (the CLI) makes it."""

        async def ask() -> R:
            async with RoutewiseClient(self.gateway.stack.settings) as rw:
                return await rw.request(getattr(rw.subjects, subject), payload, reply)

        return asyncio.run(ask())

    def a_budget(self, scope_type: str = "team", scope_id: str | None = None, **extra: Any) -> str:
        budget = self.bus(
            "budget_create",
            CreateBudget.model_validate(
                {
                    "name": f"budget {_hex()}",
                    "scope_type": scope_type,
                    "scope_id": scope_id or self.team_scope,
                    "period": "monthly",
                    "limit_usd": "5",
                    "actor": "test",
                    **extra,
                }
            ),
            Budget,
        )
        return str(budget.id)


@pytest.fixture(scope="module")
def world(nats_url: str, database: Database) -> Iterator[World]:
    ops = f"ops-{_hex()}"
    with (
        MockProvider(seed=11) as mock,
        serving(nats_url, database, mock, {"ROUTEWISE_OPERATOR_ORGS": f"{ops}, some-other-org"}) as gateway,
    ):
        w = World(gateway, ops=ops)
        # a soft budget the first call passes half of: one alert (50 %), no restriction in force
        w.budget_id = w.a_budget(limit_usd="0.000001", mode="soft", thresholds=[{"percent": 50, "actions": ["notify"]}])
        with w.http("team", Role.member) as client:
            answered = client.post("/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT})
        assert answered.status_code == 200, answered.text
        w.task_id = answered.headers["X-Routewise-Task-Id"]

        async def fired() -> AlertHistory | None:
            async with RoutewiseClient(gateway.stack.settings) as rw:
                found = await rw.request(
                    rw.subjects.budget_alerts_list, ListAlerts(budget_id=uuid.UUID(w.budget_id)), AlertHistory
                )
            return found if found.alerts else None

        asyncio.run(eventually(fired, timeout=20, interval=0.2))
        w.bus(
            "routing_tiers_set",
            SetTierPreferences(preferences=TierPreferences(workspace_id=w.workspace), actor="test"),
            TierPreferencesReply,
        )
        yield w


# ------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Case:
    """A route's row: the action it takes (what roles may), the call about acme/platform's thing,
    the kind of key that holds it, and what a key outside it gets when its role may act (None: the
    route's success, on the key's own scope, with nothing of acme/platform in it)."""

    action: str
    call: Callable[[World], Call]
    own: str = "team"
    foreign: int | None = 403
    ok: int = 200


def _fresh_price(w: World) -> Call:
    model = f"matrix-{_hex()}"
    w.bus(
        "cost_prices_set",
        SetPrice(model=model, provider="selfhost", input_mtok=Decimal(1), output_mtok=Decimal(2), actor="test"),
        PriceEntry,
    )
    return Call("DELETE", f"/api/v1/prices/selfhost/{model}")


def _fresh_model(w: World) -> Call:
    model = f"matrix-{_hex()}"
    w.bus(
        "cost_models_register",
        RegisterModel(
            id=model,
            provider="selfhost",
            tier=Tier.micro,
            quality_prior=0.5,
            context_window=8000,
            input_mtok=Decimal(1),
            output_mtok=Decimal(2),
            actor="test",
        ),
        ModelEntry,
    )
    return Call("DELETE", f"/api/v1/models/{model}")


_ADJUSTABLE: dict[str, str] = {}


def _adjustment(w: World) -> Call:
    """A correction of the cost of a task answered through the gateway for a team of acme of its own
    (acme/platform's budget, alerts and audit stay as the other tests expect them: the org key
    holds it, a sibling team's does not), to a cost of its own each time, so that the call that
    may succeed changes something."""
    if "task" not in _ADJUSTABLE:
        with w.http("adjusted", Role.member) as client:
            answered = client.post("/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT})
        assert answered.status_code == 200, answered.text
        task_id = answered.headers["X-Routewise-Task-Id"]

        async def known() -> bool:  # cost-predictor learns the gateway's cost from the bus a moment later
            conn = await asyncpg.connect(w.gateway.stack.database.admin_dsn)
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT 1 FROM cost_predictor.recorded_costs WHERE task_id = $1", uuid.UUID(task_id)
                    )
                )
            finally:
                await conn.close()

        asyncio.run(eventually(known, timeout=20, interval=0.2))
        _ADJUSTABLE["task"] = task_id
    cost = f"0.{uuid.uuid4().int % 10**9:09d}1"
    return Call(
        "POST", "/api/v1/cost/adjustments", json={"task_id": _ADJUSTABLE["task"], "cost_usd": cost, "reason": "matrix"}
    )


def _tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


PREFS = "/api/v1/cognitive-tier/preferences"
CASES: dict[str, Case] = {
    "GET /v1/models": Case("read_global", lambda w: Call("GET", "/v1/models"), foreign=None),
    "POST /v1/chat/completions": Case(
        "route",
        lambda w: Call("POST", "/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT}),
        foreign=None,
    ),
    "POST /v1/feedback": Case(
        "route",
        lambda w: Call("POST", "/v1/feedback", json={"task_id": w.task_id, "quality": 0.8}),
        foreign=404,
        ok=202,
    ),
    "GET /api/v1/cognitive-tier/preferences/{workspace_id}": Case(
        "read", lambda w: Call("GET", f"{PREFS}/{w.workspace}"), own="org"
    ),
    "POST /api/v1/cognitive-tier/preferences/{workspace_id}": Case(
        "manage",
        lambda w: Call("POST", f"{PREFS}/{w.workspace}", json={"default_tier": "standard", "quality_bias": 0.4}),
        own="org",
    ),
    "PATCH /api/v1/cognitive-tier/preferences/{workspace_id}": Case(
        "manage", lambda w: Call("PATCH", f"{PREFS}/{w.workspace}", json={"quality_bias": 0.6}), own="org"
    ),
    "DELETE /api/v1/cognitive-tier/preferences/{workspace_id}": Case(
        "manage", lambda w: Call("DELETE", f"{PREFS}/{w.workspace}"), own="org"
    ),
    "GET /api/v1/cognitive-tier/estimate-cost": Case(
        "read",
        lambda w: Call("GET", "/api/v1/cognitive-tier/estimate-cost", params={"prompt": "What is DNS?"}),
        foreign=None,
    ),
    "GET /api/v1/cognitive-tier/compare-tiers": Case(
        "read_global", lambda w: Call("GET", "/api/v1/cognitive-tier/compare-tiers"), foreign=None
    ),
    "GET /routing/decision": Case(
        "read", lambda w: Call("GET", "/routing/decision", params={"prompt": "What is DNS?"}), foreign=None
    ),
    "POST /routing/decision": Case(
        "read",
        lambda w: Call(
            "POST", "/routing/decision", json={"prompt": "What is DNS?", "scope": {"org_id": w.acme, "team_id": w.team}}
        ),
    ),
    "GET /recommendation": Case(
        "read", lambda w: Call("GET", "/recommendation", params={"prompt": "What is DNS?"}), foreign=None
    ),
    "GET /routing/metrics": Case(
        "read",
        lambda w: Call("GET", "/routing/metrics", params={"days": 7, "scope_type": "team", "scope_id": w.team_scope}),
    ),
    "POST /complete": Case(
        "route", lambda w: Call("POST", "/complete", json={"prompt": "What is DNS?", "max_tokens": 50}), foreign=None
    ),
    "GET /api/v1/routing/policies": Case(
        "read_global", lambda w: Call("GET", "/api/v1/routing/policies"), foreign=None
    ),
    "POST /api/v1/routing/policies": Case(
        "operate",
        lambda w: Call("POST", "/api/v1/routing/policies", json={"name": "matrix", "models": ["gpt-4o-mini"]}),
        own="ops",
    ),
    "GET /api/v1/routing/performance": Case(
        "read_global", lambda w: Call("GET", "/api/v1/routing/performance"), foreign=None
    ),
    "POST /api/v1/budgets": Case(
        "manage",
        lambda w: Call(
            "POST",
            "/api/v1/budgets",
            json={
                "name": "made over http",
                "scope_type": "team",
                "scope_id": w.team_scope,
                "period": "monthly",
                "limit_usd": "5",
            },
        ),
        ok=201,
    ),
    "GET /api/v1/budgets": Case(
        "read", lambda w: Call("GET", "/api/v1/budgets", params={"scope_type": "team", "scope_id": w.team_scope})
    ),
    "GET /api/v1/budgets/status/{scope_type}/{scope_id}": Case(
        "read", lambda w: Call("GET", f"/api/v1/budgets/status/team/{w.team_scope}")
    ),
    "GET /api/v1/budgets/alerts": Case(
        "read",
        lambda w: Call("GET", "/api/v1/budgets/alerts", params={"scope_type": "team", "scope_id": w.team_scope}),
    ),
    "GET /api/v1/budgets/audit": Case(
        "read",
        lambda w: Call("GET", "/api/v1/budgets/audit", params={"scope_type": "team", "scope_id": w.team_scope}),
    ),
    "POST /api/v1/budgets/approvals": Case(
        "manage",
        lambda w: Call("POST", "/api/v1/budgets/approvals", json={"task_id": w.task_id, "reason": "matrix"}),
        foreign=404,
    ),
    "GET /api/v1/budgets/{budget_id}": Case(
        "read", lambda w: Call("GET", f"/api/v1/budgets/{w.budget_id}"), foreign=404
    ),
    "PATCH /api/v1/budgets/{budget_id}": Case(
        "manage", lambda w: Call("PATCH", f"/api/v1/budgets/{w.budget_id}", json={"name": "renamed"}), foreign=404
    ),
    "DELETE /api/v1/budgets/{budget_id}": Case(
        "manage", lambda w: Call("DELETE", f"/api/v1/budgets/{w.a_budget()}"), foreign=404
    ),
    "POST /api/v1/budgets/{budget_id}/extensions": Case(
        "manage",
        lambda w: Call(
            "POST",
            f"/api/v1/budgets/{w.budget_id}/extensions",
            json={"amount_usd": "0.000001", "until": _tomorrow(), "reason": "matrix"},
        ),
        foreign=404,
    ),
    "POST /api/v1/cost/estimate": Case(
        "read",
        lambda w: Call(
            "POST",
            "/api/v1/cost/estimate",
            json={"prompt": "What is DNS?", "models": ["gpt-4o-mini"], "scope": {"org_id": w.acme, "team_id": w.team}},
        ),
    ),
    "GET /api/v1/cost/accuracy": Case("read_global", lambda w: Call("GET", "/api/v1/cost/accuracy"), foreign=None),
    "POST /api/v1/cost/adjustments": Case("manage_org", _adjustment, own="org", foreign=404, ok=201),
    "GET /api/v1/prices": Case("read_global", lambda w: Call("GET", "/api/v1/prices"), foreign=None),
    "POST /api/v1/prices": Case(
        "operate",
        lambda w: Call(
            "POST",
            "/api/v1/prices",
            json={"model": f"matrix-{_hex()}", "provider": "selfhost", "input_mtok": "1", "output_mtok": "2"},
        ),
        own="ops",
    ),
    "DELETE /api/v1/prices/{provider}/{model}": Case("operate", _fresh_price, own="ops"),
    "GET /api/v1/models": Case("read_global", lambda w: Call("GET", "/api/v1/models"), foreign=None),
    "POST /api/v1/models": Case(
        "operate",
        lambda w: Call(
            "POST",
            "/api/v1/models",
            json={
                "id": f"matrix-{_hex()}",
                "provider": "selfhost",
                "tier": "micro",
                "quality_prior": 0.5,
                "context_window": 8000,
                "input_mtok": "1",
                "output_mtok": "2",
            },
        ),
        own="ops",
        ok=201,
    ),
    "DELETE /api/v1/models/{id}": Case("operate", _fresh_model, own="ops"),
    "POST /api/v1/keys": Case(
        "manage",
        lambda w: Call("POST", "/api/v1/keys", json={"scope": w.scope_text("team"), "role": "viewer", "name": "made"}),
        ok=201,
    ),
    "GET /api/v1/keys": Case("manage", lambda w: Call("GET", "/api/v1/keys"), foreign=None),
    "DELETE /api/v1/keys/{id}": Case(
        "manage",
        lambda w: Call("DELETE", f"/api/v1/keys/{w.new_key(w.scope_text('team'), Role.viewer, 'to revoke')[1]}"),
        foreign=404,
    ),
}

MAY = {
    "read": set(Role),
    "read_global": set(Role),
    "route": {Role.admin, Role.member},
    "manage": {Role.admin},
    "manage_org": {Role.admin},
    "operate": {Role.admin},
}
"""Written out here, not read from the gateway: what each role may do (``manage_org`` and ``operate``
with an org-wide key only)."""
ORG_WIDE = {"org", "other", "ops", "gated"}
"""The kinds of key that name no team or user."""
FOREIGN = {"team": ("other", "sibling"), "org": ("other", "sibling"), "ops": ("org", "ops_team")}
"""The keys outside a thing's scope: another org's (for the operator's: a non-operator org's) and a
sibling team's (for an org's workspace: a team key of the org; for the operator's: a team of it)."""
WHOSE = ("own", "other org", "sibling team")
CELLS = [(route, role, whose) for route in CASES for role in Role for whose in WHOSE]


def expected(case: Case, role: Role, whose: str) -> int:
    if role not in MAY[case.action]:
        return 403
    if case.action == "manage_org" and key_kind(case, whose) not in ORG_WIDE:
        return 403  # a team's admin adjusts no cost: an adjustment moves the org's spend too
    if whose == "own":
        return case.ok
    if case.action == "operate":
        return 403
    return case.ok if case.foreign is None else case.foreign


def key_kind(case: Case, whose: str) -> str:
    return case.own if whose == "own" else FOREIGN[case.own][WHOSE.index(whose) - 1]


def test_every_route_the_gateway_serves_has_a_row_in_the_matrix(world: World) -> None:
    spec = httpx.get(f"{world.gateway.url}/openapi.json", timeout=10).json()
    served = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}
    assert served == set(CASES)


@pytest.mark.parametrize(("route", "role", "whose"), CELLS, ids=lambda v: str(getattr(v, "value", v)))
def test_the_authorization_matrix(world: World, route: str, role: Role, whose: str) -> None:
    case = CASES[route]
    call = case.call(world)
    kind = key_kind(case, whose)
    with world.http(kind, role) as client:
        response = client.request(call.method, call.path, params=call.params, json=call.json)

    want = expected(case, role, whose)
    assert response.status_code == want, f"{kind} {role.value}: {response.text[:500]}"
    if want >= 400:
        error = response.json()["error"]
        assert error["code"] == {403: "forbidden", 404: "not_found"}[want] and error["message"]
        assert {"message", "type", "param", "code"} <= set(error)
        return
    table = {f"{r.method} {compile_path(r.path)[1]}": r for r in ROUTES}
    if route in table:
        table[route].reply.model_validate_json(response.content)
    if whose != "own":  # nothing of the scope it is outside of
        leaked = world.acme if whose == "other org" and case.own != "ops" else world.team
        assert leaked not in response.text


# ------------------------------------------------------------------ the scope a request names


_GATED: dict[str, str] = {}


def _held_back(w: World) -> str:
    """A task of team platform of the org ``gated`` that the org's budget's approval gate rejected
    (a soft budget spent past 1 % by the task before it)."""
    if "task" not in _GATED:
        w.a_budget(
            "org",
            w.gated,
            name="gated org",
            limit_usd="0.000001",
            mode="soft",
            thresholds=[{"percent": 1, "actions": ["require-approval"]}],
        )
        with w.http("gated_team", Role.member) as client:
            first = client.post("/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT})
            assert first.status_code == 200, first.text

            async def rejected() -> httpx.Response | None:
                answer = client.post("/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT})
                return answer if answer.status_code != 200 else None

            held = asyncio.run(eventually(rejected, timeout=20, interval=0.3))  # once the first call's cost is in
        assert held.json()["error"]["reason"] == "approval_required", held.text
        _GATED["task"] = held.headers["X-Routewise-Task-Id"]
    return _GATED["task"]


def _approve_held(w: World) -> Call:
    return Call("POST", "/api/v1/budgets/approvals", json={"task_id": _held_back(w), "reason": "matrix"})


def _decision(**scope: str) -> Callable[[World], Call]:
    def call(w: World) -> Call:
        named = {k: getattr(w, v, v) for k, v in scope.items()}
        return Call("POST", "/routing/decision", json={"prompt": "What is DNS?", "scope": {"org_id": w.acme, **named}})

    return call


def _estimate(**scope: str) -> Callable[[World], Call]:
    def call(w: World) -> Call:
        named = {k: getattr(w, v, v) for k, v in scope.items()}
        return Call(
            "POST",
            "/api/v1/cost/estimate",
            json={"prompt": "What is DNS?", "models": ["gpt-4o-mini"], "scope": {"org_id": w.acme, **named}},
        )

    return call


def _new_key(scope: str) -> Callable[[World], Call]:
    return lambda w: Call(
        "POST", "/api/v1/keys", json={"scope": scope.format(acme=w.acme, team=w.team), "role": "viewer", "name": "x"}
    )


def _chat_for(user: str) -> Callable[[World], Call]:
    return lambda w: Call(
        "POST", "/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT, "user": user}
    )


SCOPE_CELLS: dict[str, tuple[str, Role, Callable[[World], Call], int]] = {
    # a key made over HTTP: a scope the maker may name (a key naming a user comes from an org-wide
    # admin or from that user's own key: only they hold the user's budgets, user:ORG/ID)
    "a team admin makes a key for a user of its team": (
        "team",
        Role.admin,
        _new_key("org:{acme}/team:{team}/user:ceo"),
        403,
    ),
    "an org admin makes a key for a user of a team": (
        "org",
        Role.admin,
        _new_key("org:{acme}/team:{team}/user:ceo"),
        201,
    ),
    "a user's admin key makes a key of its user": (
        "user",
        Role.admin,
        _new_key("org:{acme}/team:{team}/user:ana"),
        201,
    ),
    "a user's admin key makes one for its user outside the team": (
        "user",
        Role.admin,
        _new_key("org:{acme}/user:ana"),
        403,
    ),
    "a lone user's admin key makes one in a team": (
        "lone",
        Role.admin,
        _new_key("org:{acme}/team:{team}/user:bo"),
        403,
    ),
    # a task's scope named in a preview or an estimate: an org key names any of its org; another key its own
    "a team key previews for a user": ("team", Role.viewer, _decision(team_id="team", user_id="ceo"), 403),
    "a team key previews for a workspace": ("team", Role.viewer, _decision(team_id="team", workspace_id="ws"), 403),
    "a lone user's key previews in a team": ("lone", Role.viewer, _decision(team_id="team", user_id="bo"), 403),
    "a lone user's key previews as itself": ("lone", Role.viewer, _decision(user_id="bo"), 200),
    "a team member's key previews as its user": ("user", Role.viewer, _decision(team_id="team", user_id="ana"), 200),
    "an org key previews for a user of a workspace": (
        "org",
        Role.viewer,
        _decision(team_id="sibling", user_id="ceo", workspace_id="ws"),
        200,
    ),
    "a team key estimates for a user": ("team", Role.viewer, _estimate(team_id="team", user_id="ceo"), 403),
    "a team key estimates for a workspace": ("team", Role.viewer, _estimate(team_id="team", workspace_id="ws"), 403),
    "a lone user's key estimates in a team": ("lone", Role.viewer, _estimate(team_id="sibling", user_id="bo"), 403),
    "an org key estimates for a user": ("org", Role.viewer, _estimate(user_id="ceo"), 200),
    # OpenAI's user: a key without a user charges the one it names (and reads none of its budgets, below)
    "a team key's chat names a user": ("team", Role.member, _chat_for("ceo"), 200),
    "an org key's chat names a user": ("org", Role.member, _chat_for("ceo"), 200),
    # an approval lifts the gates of the budgets the key holds: a team's admin cannot lift its org's
    "a team admin approves a task its org's budget holds back": ("gated_team", Role.admin, _approve_held, 403),
    "an org admin approves a task its org's budget holds back": ("gated", Role.admin, _approve_held, 200),
    # an adjustment moves spend on the org's budgets too: org-wide admins only, even for the team's own task
    "a team admin adjusts its own team's cost": ("adjusted", Role.admin, _adjustment, 403),
}


@pytest.mark.parametrize("cell", list(SCOPE_CELLS))
def test_the_scope_a_request_names(world: World, cell: str) -> None:
    kind, role, call_of, want = SCOPE_CELLS[cell]
    call = call_of(world)
    with world.http(kind, role) as client:
        response = client.request(call.method, call.path, params=call.params, json=call.json)
    assert response.status_code == want, f"{cell}: {response.text[:500]}"
    if want == 403:
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("forbidden", "permission_error") and error["message"]


def test_a_team_admins_refused_approval_says_whose_gate_and_lifts_nothing(world: World) -> None:
    task = _held_back(world)
    with world.http("gated_team", Role.admin) as client:
        refused = client.post("/api/v1/budgets/approvals", json={"task_id": task, "reason": "mine"})
    log = world.bus("budget_audit_list", ListBudgetAudit(task_id=uuid.UUID(task)), BudgetAuditLog)
    message = refused.json()["error"]["message"]
    assert refused.status_code == 403
    assert f"org {world.gated} budget 'gated org'" in message and f"team {world.gated}/{world.team}" in message
    assert not [e for e in log.entries if e.actor.endswith("(gated_team-admin)")]  # nothing approved, nothing audited


def test_a_team_key_charges_a_user_it_names_and_reads_none_of_their_budgets(world: World) -> None:
    ceo = f"ceo-{_hex()}"
    of_ceo = world.a_budget("user", f"{world.acme}/{ceo}", limit_usd="100")
    with world.http("team", Role.member) as member:
        answered = member.post(
            "/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT, "user": ceo}
        )
    assert answered.status_code == 200, answered.text

    async def charged() -> BudgetStatus | None:
        async with RoutewiseClient(world.gateway.stack.settings) as rw:
            status = await rw.request(
                rw.subjects.budget_status,
                GetBudgetStatus(scope_type="user", scope_id=f"{world.acme}/{ceo}"),
                BudgetStatus,
            )
        return status if status.budgets and status.budgets[0].current_spend_usd > 0 else None

    asyncio.run(eventually(charged, timeout=20, interval=0.2))  # the user's budget counts the call
    with world.http("team", Role.admin) as admin:
        status = admin.get(f"/api/v1/budgets/status/user/{world.acme}/{ceo}")
        budget = admin.get(f"/api/v1/budgets/{of_ceo}")
        listed = admin.get("/api/v1/budgets", params={"scope_type": "user", "scope_id": f"{world.acme}/{ceo}"})
        everything = admin.get("/api/v1/budgets").json()["budgets"]
    assert (status.status_code, budget.status_code, listed.status_code) == (403, 404, 403)
    assert of_ceo not in {b["id"] for b in everything}


# ------------------------------------------------------------------ scopes, beyond the matrix


def test_a_key_reads_what_is_at_or_below_its_scope_and_nothing_wider(world: World) -> None:
    of_org = world.a_budget("org", world.acme)
    of_user = world.a_budget("user", f"{world.acme}/ana")
    of_team = world.budget_id
    for kind, readable in (
        ("org", {of_org, of_team, of_user}),
        ("team", {of_team}),
        ("user", {of_user}),
        ("sibling", set()),
        ("other", set()),
    ):
        with world.http(kind, Role.viewer) as client:
            got = {b: client.get(f"/api/v1/budgets/{b}").status_code for b in (of_org, of_team, of_user)}
        assert got == {b: 200 if b in readable else 404 for b in got}, kind


def test_a_list_without_a_scope_shows_what_is_within_the_key_only(world: World) -> None:
    mine = world.a_budget()
    sibling = world.a_budget("team", f"{world.acme}/{world.sibling}")
    of_org = world.a_budget("org", world.acme)
    elsewhere = world.a_budget("org", world.globex)

    def listed(kind: str) -> set[str]:
        with world.http(kind, Role.viewer) as client:
            response = client.get("/api/v1/budgets")
        assert response.status_code == 200
        return {b["id"] for b in response.json()["budgets"]}

    assert {mine, world.budget_id} <= listed("team") and not {sibling, of_org, elsewhere} & listed("team")
    assert {mine, sibling, of_org} <= listed("org") and elsewhere not in listed("org")
    assert elsewhere in listed("other") and not {mine, sibling, of_org} & listed("other")
    with world.http("team", Role.viewer) as client:
        wider = client.get("/api/v1/budgets", params={"scope_type": "org", "scope_id": world.acme})
        other_org = client.get("/api/v1/budgets", params={"org_id": world.globex})
    assert (wider.status_code, other_org.status_code) == (403, 403)


def test_a_refused_change_changes_nothing(world: World) -> None:
    budget = world.a_budget()
    with world.http("sibling", Role.admin) as sibling, world.http("team", Role.viewer) as viewer:
        assert sibling.delete(f"/api/v1/budgets/{budget}").status_code == 404
        assert viewer.delete(f"/api/v1/budgets/{budget}").status_code == 403
        assert sibling.patch(f"/api/v1/budgets/{budget}", json={"limit_usd": "1000"}).status_code == 404
    with world.http("team", Role.viewer) as client:
        still = client.get(f"/api/v1/budgets/{budget}").json()
    assert still["limit_usd"] == "5"


# ------------------------------------------------------------------ audit by key


def test_a_budget_change_over_http_is_audited_with_the_keys_id_and_name(world: World) -> None:
    budget = world.a_budget()
    with world.http("team", Role.admin) as client:
        changed = client.patch(f"/api/v1/budgets/{budget}", json={"limit_usd": "7"})
        forged = client.patch(f"/api/v1/budgets/{budget}", json={"limit_usd": "8", "actor": "the CFO"})
        extended = client.post(
            f"/api/v1/budgets/{budget}/extensions", json={"amount_usd": "1", "until": _tomorrow(), "reason": "launch"}
        )
        approved = client.post("/api/v1/budgets/approvals", json={"task_id": world.task_id, "reason": "audit"})
    actor = f"key:{world.keys['team', Role.admin][1]} (team-admin)"

    log = world.bus("budget_audit_list", ListBudgetAudit(budget_id=uuid.UUID(budget)), BudgetAuditLog)
    approvals = world.bus("budget_audit_list", ListBudgetAudit(task_id=uuid.UUID(world.task_id)), BudgetAuditLog)

    assert (changed.status_code, extended.status_code, approved.status_code) == (200, 200, 200)
    assert forged.status_code == 400 and forged.json()["error"]["param"] == "actor"
    assert [(e.action, e.actor) for e in log.entries] == [("extend", actor), ("update", actor), ("create", "test")]
    assert log.entries[1].after is not None and log.entries[1].after["limit_usd"] == "7"
    mine = [e for e in approvals.entries if e.actor == actor]
    assert mine and mine[0].task_scope is not None and mine[0].task_scope.team_id == world.team
    assert approved.json()["actor"] == actor


def test_a_cost_adjusted_over_http_is_audited_with_the_keys_id_and_name(world: World) -> None:
    call = _adjustment(world)
    with world.http("org", Role.admin) as client:
        forged = client.post(call.path, json={**call.json, "actor": "the CFO"})
        adjusted = client.post(call.path, json=call.json)
    assert forged.status_code == 400 and forged.json()["error"]["param"] == "actor"
    assert adjusted.status_code == 201, adjusted.text
    actor = f"key:{world.keys['org', Role.admin][1]} (org-admin)"
    listed = world.bus(
        "cost_adjustments_list", ListCostAdjustments(task_id=uuid.UUID(call.json["task_id"])), CostAdjustmentList
    )
    newest = listed.adjustments[0]
    assert (newest.actor, newest.reason, str(newest.cost_usd)) == (actor, "matrix", call.json["cost_usd"].rstrip("0"))
    assert newest.scope.org_id == world.acme and (newest.scope.team_id or "").startswith("adjusted-")


def test_the_audit_log_and_the_alerts_over_http_show_the_teams_own(world: World) -> None:
    with world.http("team", Role.viewer) as client:
        alerts = client.get("/api/v1/budgets/alerts").json()["alerts"]
        audit = client.get("/api/v1/budgets/audit", params={"budget_id": world.budget_id}).json()["entries"]
    assert [
        (a["budget_id"], a["threshold_percent"], a["actions"]) for a in alerts if a["budget_id"] == world.budget_id
    ] == [(world.budget_id, 50, ["notify"])]
    assert audit and all(e["scope_id"] == world.team_scope for e in audit)


# ------------------------------------------------------------------ the routes' answers


def test_complete_runs_the_prompt_through_the_gateway_and_says_how_it_was_routed(world: World) -> None:
    with world.http("team", Role.member) as client:
        response = client.post("/complete", json={"prompt": "Write a haiku about DNS.", "max_tokens": 60})
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["response"] and body["model"] == response.headers["X-Routewise-Model"]
    assert body["tokens_in"] > 0 and body["tokens_out"] > 0 and Decimal(body["cost"]) > 0
    assert body["strategy_used"] == "complexity" and body["confidence"] in ("high", "medium", "low")
    assert body["routing_metadata"]["pattern"] and body["routing_metadata"]["candidates"]
    assert body["task_id"] == response.headers["X-Routewise-Task-Id"] and body["cache_hit"] is False


def test_the_decision_explanation_and_the_recommendation_reserve_nothing(world: World) -> None:
    with world.http("team", Role.viewer) as client:
        before = client.get(f"/api/v1/budgets/status/team/{world.team_scope}").json()
        explained = client.get("/routing/decision", params={"prompt": "Prove that sqrt(2) is irrational."}).json()
        recommended = client.get("/recommendation", params={"prompt": "Prove that sqrt(2) is irrational."}).json()
        after = client.get(f"/api/v1/budgets/status/team/{world.team_scope}").json()
    decision = explained["decision"]
    assert decision["model"] and decision["strategy_used"] and decision["confidence"] in ("high", "medium", "low")
    assert explained["metadata"]["complexity"] is not None and explained["metadata"]["candidates"]
    assert recommended["model"] == decision["model"] and recommended["metadata"]["pattern"]
    assert [b["reserved_usd"] for b in after["budgets"]] == [b["reserved_usd"] for b in before["budgets"]]


def test_bad_input_is_a_400_in_the_one_error_shape(world: World) -> None:
    with world.http("team", Role.admin) as client:
        responses = [
            client.get("/api/v1/budgets/status/team/no-org-part"),
            client.post("/api/v1/budgets", json={"name": "x", "scope_type": "team"}),
            client.get("/routing/metrics", params={"days": 0}),
            client.get("/api/v1/budgets/not-a-uuid"),
        ]
    assert [r.status_code for r in responses[:3]] == [400, 400, 400]
    for response in responses[:3]:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request" and error["message"]
    assert responses[3].status_code == 404


def test_openapi_documents_every_route(world: World) -> None:
    spec = httpx.get(f"{world.gateway.url}/openapi.json", timeout=10).json()
    docs = httpx.get(f"{world.gateway.url}/docs", timeout=10)
    for route in ROUTES:
        assert spec["paths"][compile_path(route.path)[1]][route.method.lower()]["operationId"] == route.name
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ------------------------------------------------------------------ the CLI over HTTP


def cli(world: World, *args: str, kind: str | None = None, role: Role | None = None) -> Any:
    env = world.gateway.stack.cli_env()
    if kind is not None and role is not None:
        env |= {"ROUTEWISE_API_URL": world.gateway.url, "ROUTEWISE_API_KEY": world.key(kind, role)}
    return run_cli(list(args), env)


def test_the_cli_with_an_api_url_prints_what_it_prints_on_the_bus(world: World) -> None:
    for args in (
        ["budgets", "status", f"team:{world.team_scope}"],
        ["budgets", "list", f"team:{world.team_scope}", "--json"],
        ["budgets", "show", world.budget_id],
        ["tiers", "prefs", "get", world.workspace],
        ["policies", "list"],
    ):
        kind = "org" if args[0] == "tiers" else "team"
        on_bus = cli(world, *args)
        over_http = cli(world, *args, kind=kind, role=Role.viewer)
        assert on_bus.returncode == 0, on_bus.stdout + on_bus.stderr
        assert (over_http.returncode, over_http.stdout) == (0, on_bus.stdout), over_http.stderr


def test_the_cli_with_a_viewer_key_is_refused_a_change_with_the_gateways_message(world: World) -> None:
    refused = cli(
        world, "budgets", "create", "--scope", f"team:{world.team_scope}", "--limit", "5", kind="team", role=Role.viewer
    )
    made = cli(
        world,
        "budgets",
        "create",
        "--scope",
        f"team:{world.team_scope}",
        "--limit",
        "5",
        "--json",
        kind="team",
        role=Role.admin,
    )
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())  # as the terminal wrapped it
    assert "a viewer key may not manage budgets" in said and "(HTTP 403)" in said
    assert made.returncode == 0, made.stderr
    assert Budget.model_validate_json(made.stdout).scope_id == world.team_scope


def test_a_cli_command_without_an_http_route_says_so(world: World) -> None:
    result = cli(world, "alerts", kind="team", role=Role.admin)
    assert result.returncode == 1 and "talks to the bus only" in " ".join(result.stderr.split())


def test_keys_made_with_a_role_over_the_cli(world: World) -> None:
    made = cli(world, "keys", "create", "--scope", world.scope_text("team"), "--role", "viewer", "--json")
    listed = cli(world, "keys", "list", "--org", world.acme)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["role"] == "viewer"
    assert "viewer" in listed.stdout
    with httpx.Client(base_url=world.gateway.url, headers={"Authorization": f"Bearer {key['key']}"}) as client:
        assert (
            client.post("/v1/chat/completions", json={"model": "routewise/auto", "messages": PROMPT}).status_code == 403
        )
        assert client.get("/v1/models").status_code == 200
