"""The gateway's authorization rules, called directly: roles against actions, scopes against keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from routewise.contracts.api import Action
from routewise.contracts.events import Scope
from routewise.contracts.gateway import Role
from routewise.services.gateway import authorization
from routewise.services.gateway.authorization import Denied


@dataclass(frozen=True)
class Key:
    org_id: str
    team_id: str | None = None
    user_id: str | None = None
    role: Role = Role.member


ORG = Key("acme")
TEAM = Key("acme", "platform")
USER = Key("acme", "platform", "ana")
LONE_USER = Key("acme", None, "bo")

MAY = {
    Role.viewer: {Action.read, Action.read_global},
    Role.member: {Action.read, Action.read_global, Action.route},
    Role.admin: {Action.read, Action.read_global, Action.route, Action.manage},
}
"""Written out here, not read from the module: what each role may do (operate: see below)."""


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", [a for a in Action if a is not Action.operate])
def test_each_role_takes_exactly_its_actions(role: Role, action: Action) -> None:
    key = Key("acme", role=role)
    if action in MAY[role]:
        authorization.permit(key, action)
    else:
        with pytest.raises(Denied) as refused:
            authorization.permit(key, action)
        assert refused.value.status == 403 and refused.value.code == "forbidden"
        assert f"a {role.value} key may not" in refused.value.message


def test_a_refusal_says_which_role_it_would_need() -> None:
    with pytest.raises(Denied) as refused:
        authorization.permit(Key("acme", role=Role.viewer), Action.manage)
    assert refused.value.message.endswith("that needs the role admin")
    with pytest.raises(Denied) as refused:
        authorization.permit(Key("acme", role=Role.viewer), Action.route)
    assert refused.value.message.endswith("that needs the role admin or member")


@pytest.mark.parametrize(
    ("key", "operator"),
    [
        (Key("ops", role=Role.admin), True),
        (Key("ops", role=Role.member), False),
        (Key("ops", role=Role.viewer), False),
        (Key("ops", "platform", role=Role.admin), False),  # a team's admin in the operator org is not an operator
        (Key("ops", None, "ana", role=Role.admin), False),
        (Key("acme", role=Role.admin), False),  # not an operator org
    ],
)
def test_only_an_org_wide_admin_key_of_an_operator_org_changes_what_every_org_shares(key: Key, operator: bool) -> None:
    if operator:
        authorization.permit(key, Action.operate, ["ops"])
    else:
        with pytest.raises(Denied) as refused:
            authorization.permit(key, Action.operate, ["ops"])
        assert refused.value.status == 403 and "operator org (ROUTEWISE_OPERATOR_ORGS)" in refused.value.message


def test_with_no_operator_org_nobody_changes_prices_over_http() -> None:
    with pytest.raises(Denied):
        authorization.permit(Key("ops", role=Role.admin), Action.operate)


@pytest.mark.parametrize(
    ("key", "scope_type", "scope_id", "held"),
    [
        (ORG, "org", "acme", True),
        (ORG, "team", "acme/platform", True),
        (ORG, "team", "acme/research", True),
        (ORG, "user", "acme/ana", True),
        (ORG, "workspace", "acme/ws", True),
        (ORG, "org", "acme2", False),
        (ORG, "team", "acme2/platform", False),
        (TEAM, "team", "acme/platform", True),
        (TEAM, "team", "acme/research", False),  # a sibling team
        (TEAM, "org", "acme", False),  # its org is wider than the key
        (TEAM, "user", "acme/ana", False),  # a user's budget names no team
        (TEAM, "workspace", "acme/ws", False),
        (TEAM, "team", "globex/platform", False),
        (USER, "user", "acme/ana", True),
        (USER, "user", "acme/bo", False),
        (USER, "team", "acme/platform", False),
        (LONE_USER, "user", "acme/bo", True),
        (ORG, "team", "acme", False),  # not a team's id (no org part): held by no key
        (ORG, "org", "acme/platform", False),
    ],
)
def test_a_scope_is_within_a_key_only_at_or_below_it(key: Key, scope_type: str, scope_id: str, held: bool) -> None:
    assert authorization.holds(key, scope_type, scope_id) is held
    if held:
        authorization.require(key, scope_type, scope_id)
    else:
        with pytest.raises(Denied) as refused:
            authorization.require(key, scope_type, scope_id)
        assert refused.value.status == 403
        assert refused.value.message == (
            f"{scope_type}:{scope_id} is outside this key's scope ({authorization.text(key)})"
        )


@pytest.mark.parametrize(
    ("key", "task", "held"),
    [
        (ORG, Scope(org_id="acme"), True),
        (ORG, Scope(org_id="acme", team_id="research", user_id="zoe"), True),
        (ORG, Scope(org_id="globex"), False),
        (TEAM, Scope(org_id="acme", team_id="platform"), True),
        (TEAM, Scope(org_id="acme", team_id="platform", user_id="ana", workspace_id="ws"), True),
        (TEAM, Scope(org_id="acme", team_id="research"), False),
        (TEAM, Scope(org_id="acme"), False),
        (TEAM, Scope(org_id="acme", user_id="ana"), False),
        (TEAM, Scope(org_id="globex", team_id="platform"), False),
        (USER, Scope(org_id="acme", team_id="platform", user_id="ana"), True),
        (USER, Scope(org_id="acme", team_id="platform", user_id="bo"), False),
        (USER, Scope(org_id="acme", team_id="platform"), False),
        (LONE_USER, Scope(org_id="acme", user_id="bo"), True),
        (LONE_USER, Scope(org_id="acme", team_id="platform", user_id="bo"), True),
    ],
)
def test_a_tasks_scope_is_within_a_key_when_it_matches_every_level_the_key_names(
    key: Key, task: Scope, held: bool
) -> None:
    assert authorization.holds_task(key, task) is held


@pytest.mark.parametrize(
    ("key", "own"),
    [
        (ORG, ("org", "acme")),
        (TEAM, ("team", "acme/platform")),
        (USER, ("user", "acme/ana")),
        (LONE_USER, ("user", "acme/bo")),
    ],
)
def test_a_keys_own_scope_is_its_narrowest_level_and_within_it(key: Key, own: tuple[str, str]) -> None:
    assert authorization.own_scope(key) == own
    assert authorization.holds(key, *own)


def test_another_orgs_filter_is_refused_and_the_keys_own_is_not() -> None:
    authorization.require_org(TEAM, None)
    authorization.require_org(TEAM, "acme")
    with pytest.raises(Denied) as refused:
        authorization.require_org(TEAM, "globex")
    assert refused.value.status == 403


def test_what_is_found_outside_the_scope_is_not_found_as_if_it_did_not_exist() -> None:
    denied = authorization.not_found("budget 123")
    assert (denied.status, denied.code, denied.message) == (404, "not_found", "no budget 123")
