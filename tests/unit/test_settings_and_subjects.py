from __future__ import annotations

import pytest
from pydantic import ValidationError

from routewise.contracts.subjects import SERVICES, Subjects, durable
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
    assert s.stream_for(s.cost_recorded).name == "ROUTEWISE_EVENTS"
    assert s.stream_for(s.budget_alert("org", "a")).name == "ROUTEWISE_ALERTS"
    assert s.stream_for(s.dead_letter("selector")).name == "ROUTEWISE_DEADLETTER"
    with pytest.raises(LookupError):
        s.stream_for(s.cost_estimate)  # request/reply is not stored


def test_no_two_streams_capture_the_same_subject() -> None:
    patterns = [p for stream in Subjects().streams for p in stream.subjects]
    assert len(patterns) == len(set(patterns))


def test_durables_are_per_service_and_subject() -> None:
    names = {durable(svc, Subjects().cost_recorded) for svc in SERVICES}
    assert len(names) == len(SERVICES)
    assert durable("metrics", "routewise.costs.recorded") == "metrics-costs-recorded"


def test_backoff_repeats_its_last_value() -> None:
    s = Settings(retry_backoff=[1, 5, 15])
    assert [s.backoff_for(n) for n in (1, 2, 3, 4, 9)] == [1, 5, 15, 15, 15]


@pytest.mark.parametrize("namespace", ["Routewise", "a.b", "", "x" * 40])
def test_a_namespace_must_be_a_subject_token(namespace: str) -> None:
    with pytest.raises(ValidationError):
        Settings(namespace=namespace)
