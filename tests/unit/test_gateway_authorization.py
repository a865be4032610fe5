"""The gateway's authorization rules, called directly: roles against actions, scopes against keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from routewise.contracts.api import Action
from routewise.contracts.events import Scope
from routewise.contracts.gateway import Role, parse_key_scope
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
    Role.admin: {Action.read, Action.read_global, Action.route, Action.manage, Action.manage_org},
}
"""Written out here, not read from the module: what each role of an org-wide key may do (operate:
see below)."""


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
        (ORG, Scope(org_id="acme", team_id="research", user_id="zoe", workspace_id="ws"), True),
        (ORG, Scope(org_id="globex"), False),
        (TEAM, Scope(org_id="acme", team_id="platform"), True),
        (TEAM, Scope(org_id="acme", team_id="platform", user_id="ana"), True),  # charged to ana with `user`
        (TEAM, Scope(org_id="acme", team_id="research"), False),
        (TEAM, Scope(org_id="acme"), False),
        (TEAM, Scope(org_id="acme", user_id="ana"), False),
        (TEAM, Scope(org_id="globex", team_id="platform"), False),
        (USER, Scope(org_id="acme", team_id="platform", user_id="ana"), True),
        (USER, Scope(org_id="acme", team_id="platform", user_id="bo"), False),
        (USER, Scope(org_id="acme", team_id="platform"), False),
        (LONE_USER, Scope(org_id="acme", user_id="bo"), True),
        (LONE_USER, Scope(org_id="acme", user_id="ana"), False),
    ],
)
def test_a_task_found_by_id_is_within_a_key_when_it_has_every_id_the_key_names(
    key: Key, task: Scope, held: bool
) -> None:
    assert authorization.holds_task(key, task) is held


@pytest.mark.parametrize(
    ("key", "named", "refusal"),
    [
        (ORG, Scope(org_id="acme"), None),
        (ORG, Scope(org_id="acme", team_id="research", user_id="zoe", workspace_id="ws"), None),
        (ORG, Scope(org_id="globex"), "org:globex is outside this key's scope (org:acme)"),
        (TEAM, Scope(org_id="acme", team_id="platform"), None),
        (TEAM, Scope(org_id="acme", team_id="platform", user_id="ceo"), "may not name user ceo in a task's scope"),
        (TEAM, Scope(org_id="acme", team_id="platform", workspace_id="ws"), "may not name workspace ws"),
        (
            TEAM,
            Scope(org_id="acme", team_id="platform", user_id="ana", workspace_id="ws"),
            "may not name user ana or workspace ws",
        ),
        (TEAM, Scope(org_id="acme", team_id="research"), "is outside this key's scope"),
        (TEAM, Scope(org_id="acme"), "is outside this key's scope"),
        (USER, Scope(org_id="acme", team_id="platform", user_id="ana"), None),
        (USER, Scope(org_id="acme", team_id="platform", user_id="ana", workspace_id="ws"), "may not name workspace"),
        (USER, Scope(org_id="acme", team_id="platform", user_id="bo"), "is outside this key's scope"),
        (LONE_USER, Scope(org_id="acme", user_id="bo"), None),
        (LONE_USER, Scope(org_id="acme", team_id="platform", user_id="bo"), "may not name team platform"),
        (LONE_USER, Scope(org_id="acme", team_id="evil", user_id="bo"), "may not name team evil"),
    ],
)
def test_a_scope_a_request_names_is_the_keys_own_unless_the_key_is_org_wide(
    key: Key, named: Scope, refusal: str | None
) -> None:
    assert authorization.names_within(key, named) is (refusal is None)
    if refusal is None:
        authorization.require_task(key, named)
        return
    with pytest.raises(Denied) as refused:
        authorization.require_task(key, named)
    assert refused.value.status == 403 and refusal in refused.value.message
    assert authorization.text(named) in refused.value.message


def admin(key: Key, role: Role = Role.admin) -> Key:
    return Key(key.org_id, key.team_id, key.user_id, role)


@pytest.mark.parametrize(
    ("maker", "scope", "role", "refusal"),
    [
        (admin(ORG), "org:acme/team:evil/user:ceo", Role.admin, None),
        (admin(ORG), "org:acme/user:ceo", Role.admin, None),
        (admin(ORG), "org:acme", Role.admin, None),
        (admin(TEAM), "org:acme/team:platform", Role.admin, None),
        (admin(TEAM), "org:acme/team:platform", Role.viewer, None),
        # a team's admin may not make a key that holds a user's budgets (user:acme/ceo, org-wide)
        (admin(TEAM), "org:acme/team:platform/user:ceo", Role.viewer, "may not name user ceo in a new key's scope"),
        (admin(Key("acme", "evil")), "org:acme/team:evil/user:ceo", Role.admin, "may not name user ceo"),
        (admin(TEAM), "org:acme/team:research", Role.viewer, "is outside this key's scope"),
        (admin(TEAM), "org:acme", Role.viewer, "is outside this key's scope"),
        (admin(USER), "org:acme/team:platform/user:ana", Role.member, None),  # the user's own key
        (admin(USER), "org:acme/user:ana", Role.member, "is outside this key's scope"),
        (admin(LONE_USER), "org:acme/team:platform/user:bo", Role.member, "may not name team platform"),
        (admin(ORG, Role.member), "org:acme", Role.admin, "a member key may not make an admin key"),
        (admin(ORG, Role.viewer), "org:acme", Role.member, "a viewer key may not make a member key"),
        (admin(ORG, Role.member), "org:acme", Role.member, None),
    ],
)
def test_a_key_makes_keys_it_may_name_of_its_role_or_below(
    maker: Key, scope: str, role: Role, refusal: str | None
) -> None:
    new = parse_key_scope(scope)
    if refusal is None:
        authorization.require_new_key(maker, new, role)
        return
    with pytest.raises(Denied) as refused:
        authorization.require_new_key(maker, new, role)
    assert refused.value.status == 403 and refusal in refused.value.message


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        (admin(ORG), True),
        (admin(TEAM), False),  # an adjustment moves the org's spend too
        (admin(USER), False),
        (admin(LONE_USER), False),
        (Key("acme", role=Role.member), False),
    ],
)
def test_only_an_org_wide_admin_key_adjusts_costs(key: Key, allowed: bool) -> None:
    if allowed:
        authorization.permit(key, Action.manage_org)
        return
    with pytest.raises(Denied) as refused:
        authorization.permit(key, Action.manage_org)
    assert refused.value.status == 403
    needs = "that needs the role admin" if key.role is not Role.admin else "that needs an org-wide admin key"
    assert needs in refused.value.message


@pytest.mark.parametrize(
    ("outer", "inner", "contained"),
    [
        (Scope(org_id="acme"), Scope(org_id="acme", team_id="t", user_id="u", workspace_id="w"), True),
        (Scope(org_id="acme", team_id="t"), Scope(org_id="acme", team_id="t", user_id="u"), True),
        (Scope(org_id="acme", team_id="t", user_id="u"), Scope(org_id="acme", team_id="t", user_id="u"), True),
        (Scope(org_id="acme", workspace_id="w"), Scope(org_id="acme", team_id="t", workspace_id="w"), True),
        (Scope(org_id="acme", team_id="t", user_id="u"), Scope(org_id="acme", team_id="t"), False),
        (Scope(org_id="acme", team_id="t"), Scope(org_id="acme", team_id="s", user_id="u"), False),
        (Scope(org_id="acme", workspace_id="w"), Scope(org_id="acme", workspace_id="v"), False),
        (Scope(org_id="acme"), Scope(org_id="globex"), False),
    ],
)
def test_one_containment_rule_for_scopes(outer: Scope, inner: Scope, contained: bool) -> None:
    """``Scope.contains``: what the gateway finds by id and what an adjustment's scope may correct."""
    assert outer.contains(inner) is contained


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
