from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from routewise.contracts.events import (
    BudgetAlert,
    CostRecorded,
    FeedbackRecorded,
    ModelHealthChanged,
    ModelSelected,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.subjects import SERVICES, Subjects, durable, subject_matches, subject_token
from routewise.runtime.settings import Settings


def test_subjects_follow_the_architecture_names() -> None:
    s = Subjects()
    assert s.task_arrived == "routewise.tasks.arrived"
    assert s.model_selected == "routewise.models.selected"
    assert s.cost_recorded == "routewise.costs.recorded"
    assert s.budget_alert("team", "acme/core") == "routewise.budgets.alerts.acme.team.core"
    assert s.budget_alert("org", "acme") == "routewise.budgets.alerts.acme.org.acme"
    assert s.org_alerts("acme") == "routewise.budgets.alerts.acme.>"
    # an id's dots and wildcards stay inside its token: no org can read another's alerts
    assert s.budget_alert("user", "acme.x/a.b*") == "routewise.budgets.alerts.acme=2Ex.user.a=2Eb=2A"
    assert s.cost_estimate == "routewise.cost.estimate"
    assert s.stream_for(s.for_org("cost_recorded", "acme")).name == "ROUTEWISE_EVENTS"
    assert s.stream_for(s.budget_alert("org", "a")).name == "ROUTEWISE_ALERTS"
    assert s.stream_for(s.dead_letter("selector")).name == "ROUTEWISE_DEADLETTER"
    with pytest.raises(LookupError):
        s.stream_for(s.cost_estimate)  # request/reply is not stored


def test_no_two_streams_capture_the_same_subject() -> None:
    patterns = [p for stream in Subjects().streams for p in stream.subjects]
    assert len(patterns) == len(set(patterns))


def test_durables_are_per_service_and_subject() -> None:
    names = {durable(svc, Subjects().of(CostRecorded)) for svc in SERVICES}
    assert len(names) == len(SERVICES)
    assert durable("metrics", "routewise.costs.recorded") == "metrics-costs-recorded"


def test_a_durable_name_leaves_the_wildcards_out() -> None:
    """The consumer of every org's costs keeps the name the release before it had (NATS refuses
    ``*`` and ``>`` in a durable name)."""
    s = Subjects()
    assert durable("metrics", s.of(CostRecorded)) == "metrics-costs-recorded"
    assert durable("selector", s.of(TaskArrived)) == "selector-tasks-arrived"
    assert durable("gateway", s.of(BudgetAlert)) == "gateway-budgets-alerts"
    assert durable("metrics", "routewise.costs.>") == "metrics-costs"
    assert durable("metrics", "routewise.*.recorded.*") == "metrics-recorded"


SCOPE = Scope(org_id="acme", team_id="core")


def a_cost(org: str = "acme") -> CostRecorded:
    return CostRecorded(
        task_id=uuid.uuid4(),
        scope=Scope(org_id=org),
        model="gpt-4o",
        provider="openai",
        input_tokens=1,
        output_tokens=1,
        cost_usd=Decimal("0.01"),
    )


def test_the_events_that_carry_an_org_are_consumed_for_every_org() -> None:
    s = Subjects()
    assert s.of(TaskArrived) == "routewise.tasks.arrived.*"
    assert s.of(ModelSelected) == "routewise.models.selected.*"
    assert s.of(TaskRejected) == "routewise.tasks.rejected.*"
    assert s.of(CostRecorded) == "routewise.costs.recorded.*"
    assert s.of(FeedbackRecorded) == "routewise.feedback.recorded.*"
    assert s.of(BudgetAlert) == "routewise.budgets.alerts.>"
    assert s.of(ModelHealthChanged) == "routewise.models.health"  # no org: the subject itself


def test_for_org_names_one_orgs_subject() -> None:
    s = Subjects(namespace="rw")
    assert s.for_org("cost_recorded", "acme") == "rw.costs.recorded.acme"
    assert s.for_org("task_arrived", "acme") == "rw.tasks.arrived.acme"
    assert s.for_org("model_selected", "a.b") == "rw.models.selected.a=2Eb"
    with pytest.raises(AttributeError):
        s.for_org("no_such_event", "acme")


def test_an_event_is_published_on_its_orgs_subject() -> None:
    s = Subjects()
    cost = a_cost()
    assert s.event(cost) == "routewise.costs.recorded.acme"
    assert s.event(a_cost("a.b")) == "routewise.costs.recorded.a=2Eb"  # one token, not org a's
    task = TaskArrived(scope=SCOPE, prompt="hi")
    assert s.event(task) == "routewise.tasks.arrived.acme"  # the org, whatever team or user pays
    rejected = TaskRejected(
        task_id=task.task_id, scope=SCOPE, task_type="normal", reason="budget_exhausted", detail="x"
    )
    assert s.event(rejected) == "routewise.tasks.rejected.acme"
    feedback = FeedbackRecorded(task_id=task.task_id, scope=SCOPE, model="gpt-4o", quality=0.5)
    assert s.event(feedback) == "routewise.feedback.recorded.acme"
    health = ModelHealthChanged(model="gpt-4o", previous="healthy", state="demoted", reason="errors")
    assert s.event(health) == "routewise.models.health"
    for event in (cost, task, rejected, feedback):
        assert subject_matches(s.of(type(event)), s.event(event))
        assert s.stream_for(s.event(event)).name == ("ROUTEWISE_TASKS" if event is task else "ROUTEWISE_EVENTS")


def test_an_alert_is_published_on_its_orgs_alert_subject() -> None:
    s = Subjects()
    alert = BudgetAlert(
        budget_id=uuid.uuid4(),
        budget_name="core",
        scope_type="team",
        scope_id="acme/core",
        period_start=datetime(2025, 1, 1, tzinfo=UTC),
        period_end=None,
        threshold_percent=80,
        spent_usd=Decimal(8),
        limit_usd=Decimal(10),
        percent=Decimal(80),
        actions=[],
        actions_in_force=[],
    )
    assert s.event(alert) == "routewise.budgets.alerts.acme.team.core"
    assert subject_matches(s.org_alerts("acme"), s.event(alert))
    assert not subject_matches(s.org_alerts("acm"), s.event(alert))


def test_the_org_token_is_read_back_from_a_subject() -> None:
    s = Subjects()
    assert s.org_token(CostRecorded, s.event(a_cost())) == "acme"
    assert s.org_token(CostRecorded, s.event(a_cost("a.b"))) == subject_token("a.b") == "a=2Eb"
    assert s.org_token(TaskArrived, s.for_org("task_arrived", "x:y@z")) == "x:y@z"
    assert s.org_token(BudgetAlert, s.budget_alert("user", "a.b/ann")) == "a=2Eb"
    assert s.org_token(ModelHealthChanged, s.model_health_changed) is None


@pytest.mark.parametrize(
    ("org", "token"),
    [("a.b", "a=2Eb"), ("a*", "a=2A"), ("a>", "a=3E"), ("a b", "a=20b"), ("a=2Eb", "a=3D2Eb"), ("acme", "acme")],
)
def test_an_org_id_becomes_one_escaped_subject_token(org: str, token: str) -> None:
    """Whatever an id holds, it is one token: it can neither add a token (``.``), nor be a wildcard
    (``*``, ``>``), nor break the subject (a space); and two ids never share a token."""
    s = Subjects()
    assert subject_token(org) == token
    subject = s.for_org("cost_recorded", org)
    assert subject == f"routewise.costs.recorded.{token}"
    assert len(subject.split(".")) == 4
    assert subject_matches(s.of(CostRecorded), subject)
    assert s.org_token(CostRecorded, subject) == token


def test_an_org_id_with_a_wildcard_or_a_space_is_refused_by_the_contracts() -> None:
    for org in ("a*", "a>", "a b", "=2E"):
        with pytest.raises(ValidationError):
            Scope(org_id=org)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("rw.costs.recorded.*", "rw.costs.recorded.acme", True),
        ("rw.costs.recorded.*", "rw.costs.recorded", False),  # the older, unsuffixed subject
        ("rw.costs.recorded.*", "rw.costs.recorded.acme.x", False),
        ("rw.costs.>", "rw.costs.recorded.acme", True),
        ("rw.costs.>", "rw.costs", False),
        ("rw.costs.>", "rw.costs.recorded.*", True),  # a pattern inside another
        ("rw.tasks.rejected.*", "rw.tasks.arrived.acme", False),
        ("rw.*.recorded.*", "rw.feedback.recorded.a=2Eb", True),
        ("rw.costs.recorded.acme", "rw.costs.recorded.acme", True),
        ("rw.costs.recorded.acme", "rw.costs.recorded.acm", False),
        ("rw.budgets.alerts.acme.>", "rw.budgets.alerts.acme=2Eb.org.acme=2Eb", False),
    ],
)
def test_subject_matches_follows_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def test_the_streams_capture_only_org_subjects_of_the_org_events() -> None:
    s = Subjects()
    assert s.tasks_stream.subjects == ("routewise.tasks.arrived.*",)
    assert "routewise.tasks.rejected.*" in s.events_stream.subjects
    for name in ("task_arrived", "model_selected", "task_rejected", "cost_recorded", "feedback_recorded"):
        assert s.stream_for(s.for_org(name, "acme")).name in ("ROUTEWISE_TASKS", "ROUTEWISE_EVENTS")
    for bare in (s.task_arrived, s.task_rejected):  # the old unsuffixed subjects are no longer kept
        with pytest.raises(LookupError):
            s.stream_for(bare)


def test_backoff_repeats_its_last_value() -> None:
    s = Settings(retry_backoff=[1, 5, 15])
    assert [s.backoff_for(n) for n in (1, 2, 3, 4, 9)] == [1, 5, 15, 15, 15]


@pytest.mark.parametrize("namespace", ["Routewise", "a.b", "", "x" * 40])
def test_a_namespace_must_be_a_subject_token(namespace: str) -> None:
    with pytest.raises(ValidationError):
        Settings(namespace=namespace)
