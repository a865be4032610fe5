"""Every subject, stream and durable name, defined once.

All names hang off a namespace (``routewise`` by default) so that several isolated
deployments, or test runs, can share one NATS server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SERVICES = ("selector", "cost_predictor", "budget_enforcer", "performance_tracker", "metrics", "gateway")

ORG_EVENTS = frozenset(
    {
        "task_arrived",
        "model_selected",
        "task_rejected",
        "cost_reported",
        "cost_recorded",
        "cost_refused",
        "cost_adjusted",
        "feedback_recorded",
    }
)
"""The events whose subject ends with their org (``<ns>.costs.recorded.<org>``): a tenant's bus user
may publish and subscribe only to its own org's (``routewise bus-user create``)."""


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class Subjects:
    namespace: str = "routewise"
    # events (past tense)
    task_arrived: str = field(init=False)
    model_selected: str = field(init=False)
    task_rejected: str = field(init=False)
    cost_reported: str = field(init=False)
    cost_recorded: str = field(init=False)
    cost_refused: str = field(init=False)
    cost_adjusted: str = field(init=False)
    feedback_recorded: str = field(init=False)
    model_health_changed: str = field(init=False)
    budget_alerts: str = field(init=False)
    # request/reply (imperative)
    cost_estimate: str = field(init=False)
    cost_price: str = field(init=False)
    budget_status: str = field(init=False)
    performance_query: str = field(init=False)
    metrics_summary: str = field(init=False)
    metrics_report: str = field(init=False)
    routing_decision: str = field(init=False)
    routing_decide: str = field(init=False)
    routing_policies_list: str = field(init=False)
    routing_policies_set: str = field(init=False)
    routing_tiers_get: str = field(init=False)
    routing_tiers_set: str = field(init=False)
    routing_tiers_delete: str = field(init=False)
    budget_reserve: str = field(init=False)
    budget_release: str = field(init=False)
    budget_create: str = field(init=False)
    budget_update: str = field(init=False)
    budget_delete: str = field(init=False)
    budget_list: str = field(init=False)
    budget_show: str = field(init=False)
    budget_approve: str = field(init=False)
    budget_extend: str = field(init=False)
    budget_alerts_list: str = field(init=False)
    budget_audit_list: str = field(init=False)
    cost_compare_tiers: str = field(init=False)
    cost_accuracy: str = field(init=False)
    cost_adjust: str = field(init=False)
    cost_adjustments_list: str = field(init=False)
    cost_prices_set: str = field(init=False)
    cost_prices_remove: str = field(init=False)
    cost_prices_list: str = field(init=False)
    cost_prices_changed: str = field(init=False)
    routing_settings_changed: str = field(init=False)
    cost_models_register: str = field(init=False)
    cost_models_list: str = field(init=False)
    cost_models_remove: str = field(init=False)
    keys_create: str = field(init=False)
    keys_list: str = field(init=False)
    keys_revoke: str = field(init=False)

    def __post_init__(self) -> None:
        ns = self.namespace
        values = {
            "task_arrived": f"{ns}.tasks.arrived",
            "model_selected": f"{ns}.models.selected",
            "task_rejected": f"{ns}.tasks.rejected",
            # an application's word (checked by cost-predictor), what every consumer applies, what was
            # refused, and corrections
            "cost_reported": f"{ns}.costs.reported",
            "cost_recorded": f"{ns}.costs.recorded",
            "cost_refused": f"{ns}.costs.refused",
            "cost_adjusted": f"{ns}.costs.adjusted",
            "feedback_recorded": f"{ns}.feedback.recorded",
            "model_health_changed": f"{ns}.models.health",
            "budget_alerts": f"{ns}.budgets.alerts",
            "cost_estimate": f"{ns}.cost.estimate",
            "cost_price": f"{ns}.cost.price",
            "budget_status": f"{ns}.budget.status",
            "performance_query": f"{ns}.performance.query",
            "metrics_summary": f"{ns}.metrics.summary",
            "metrics_report": f"{ns}.metrics.report",
            "routing_decision": f"{ns}.routing.decision",
            "routing_decide": f"{ns}.routing.decide",
            "routing_policies_list": f"{ns}.routing.policies.list",
            "routing_policies_set": f"{ns}.routing.policies.set",
            "routing_tiers_get": f"{ns}.routing.tiers.get",
            "routing_tiers_set": f"{ns}.routing.tiers.set",
            "routing_tiers_delete": f"{ns}.routing.tiers.delete",
            "budget_reserve": f"{ns}.budget.reserve",
            "budget_release": f"{ns}.budget.release",
            "budget_create": f"{ns}.budget.create",
            "budget_update": f"{ns}.budget.update",
            "budget_delete": f"{ns}.budget.delete",
            "budget_list": f"{ns}.budget.list",
            "budget_show": f"{ns}.budget.show",
            "budget_approve": f"{ns}.budget.approve",
            "budget_extend": f"{ns}.budget.extend",
            "budget_alerts_list": f"{ns}.budget.alerts.list",
            "budget_audit_list": f"{ns}.budget.audit.list",
            "cost_compare_tiers": f"{ns}.cost.compare_tiers",
            "cost_accuracy": f"{ns}.cost.accuracy",
            "cost_adjust": f"{ns}.cost.adjust",
            "cost_adjustments_list": f"{ns}.cost.adjustments.list",
            "cost_prices_set": f"{ns}.cost.prices.set",
            "cost_prices_remove": f"{ns}.cost.prices.remove",
            "cost_prices_list": f"{ns}.cost.prices.list",
            # a notice to every cost-predictor replica (not stored): reload the price overrides and
            # the registered models
            "cost_prices_changed": f"{ns}.cost.prices.changed",
            # a notice to every selector replica (not stored): forget the policies and preferences held
            "routing_settings_changed": f"{ns}.routing.settings.changed",
            # models registered at run time (cost-predictor keeps them and publishes the catalog)
            "cost_models_register": f"{ns}.cost.models.register",
            "cost_models_list": f"{ns}.cost.models.list",
            "cost_models_remove": f"{ns}.cost.models.remove",
            # the gateway's API keys
            "keys_create": f"{ns}.gateway.keys.create",
            "keys_list": f"{ns}.gateway.keys.list",
            "keys_revoke": f"{ns}.gateway.keys.revoke",
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def of(self, event_type: type[Any]) -> str:
        """What a consumer of an event type subscribes to: its subject, every org's
        (``<ns>.costs.recorded.*``), every alert (``<ns>.budgets.alerts.>``)."""
        subject: str = getattr(self, event_type.SUBJECT)
        if event_type.SUBJECT == "budget_alerts":
            return f"{subject}.>"
        return f"{subject}.*" if event_type.SUBJECT in ORG_EVENTS else subject

    def for_org(self, name: str, org_id: str) -> str:
        """The subject of one org's events of a kind (``for_org("cost_recorded", "acme")``)."""
        return f"{getattr(self, name)}.{subject_token(org_id)}"

    def event(self, event: Any) -> str:
        """The subject one event is published on: its org's, for the events that carry one."""
        name: str = event.SUBJECT
        if name in ORG_EVENTS:
            return self.for_org(name, event.scope.org_id)
        if name == "budget_alerts":
            return self.budget_alert(event.scope_type, event.scope_id)
        subject: str = getattr(self, name)
        return subject

    def org_token(self, event_type: type[Any], subject: str) -> str | None:
        """The org token a subject carries for an event type (None: the type carries none)."""
        if event_type.SUBJECT in ORG_EVENTS:
            return subject.rsplit(".", 1)[-1]
        if event_type.SUBJECT == "budget_alerts":
            return subject.removeprefix(f"{self.budget_alerts}.").split(".", 1)[0]
        return None

    def budget_alert(self, scope_type: str, scope_id: str) -> str:
        """``<alerts>.<org>.<scope_type>.<id>`` for a scope (``org`` or ``org/id``): an org's alerts
        are ``<alerts>.<org>.>``, whatever its teams and users are called."""
        org, _, local = scope_id.partition("/")
        return f"{self.budget_alerts}.{subject_token(org)}.{scope_type}.{subject_token(local or org)}"

    def org_alerts(self, org_id: str) -> str:
        """Every budget alert of one org (a subscription pattern)."""
        return f"{self.budget_alerts}.{subject_token(org_id)}.>"

    def dead_letter(self, service: str) -> str:
        return f"{self.namespace}.deadletter.{service}"

    @property
    def events_stream(self) -> Stream:
        """Decisions, costs, feedback and model health: what consumers must still apply, kept for weeks."""
        ns = self.namespace
        return Stream(
            f"{ns.upper()}_EVENTS",
            (f"{self.task_rejected}.*", f"{ns}.models.>", f"{ns}.costs.>", f"{ns}.feedback.>"),
        )

    @property
    def tasks_stream(self) -> Stream:
        """TaskArrived alone (it carries the prompt): kept only until it has surely been decided."""
        return Stream(f"{self.namespace.upper()}_TASKS", (f"{self.task_arrived}.*",))

    @property
    def alerts_stream(self) -> Stream:
        return Stream(f"{self.namespace.upper()}_ALERTS", (f"{self.budget_alerts}.>",))

    @property
    def dead_letter_stream(self) -> Stream:
        return Stream(f"{self.namespace.upper()}_DEADLETTER", (f"{self.namespace}.deadletter.>",))

    @property
    def streams(self) -> tuple[Stream, ...]:
        return (self.events_stream, self.tasks_stream, self.alerts_stream, self.dead_letter_stream)

    @property
    def performance_bucket(self) -> str:
        """The JetStream KV bucket of model performance snapshots (written by performance-tracker alone)."""
        return f"{self.namespace.upper()}_MODEL_PERFORMANCE"

    @property
    def catalog_bucket(self) -> str:
        """The JetStream KV bucket of the live model catalog (written by cost-predictor alone;
        key ``catalog``): the shipped models, the registered ones and which have a price."""
        return f"{self.namespace.upper()}_MODEL_CATALOG"

    @property
    def profiles_bucket(self) -> str:
        """The JetStream KV bucket of the output tokens learnt per model and task type (written by
        cost-predictor alone; one key per task type): what the selector estimates decisions with."""
        return f"{self.namespace.upper()}_OUTPUT_PROFILES"

    def stream_for(self, subject: str) -> Stream:
        for stream in self.streams:
            if any(subject_matches(pattern, subject) for pattern in stream.subjects):
                return stream
        raise LookupError(f"no stream captures subject {subject!r}")


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (itself a subject or a pattern with ``*``/``>``) falls under ``pattern``."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(have) == len(want)


def subject_token(value: str) -> str:
    """A bounded id as one subject token: characters with a meaning in subjects (``.``, ``*``,
    ``>``, spaces) or outside a safe set become ``=XX``, so two ids never share a token."""
    return re.sub(r"[^-_a-zA-Z0-9:@]", lambda m: f"={ord(m.group()):02X}", value)


def snapshot_key(model: str) -> str:
    """A model's key in the performance bucket: characters KV keys do not allow become =XX."""
    return "model." + re.sub(r"[^-/_a-zA-Z0-9.]", lambda m: f"={ord(m.group()):02X}", model)


def durable(service: str, subject: str) -> str:
    """Durable consumer name: the service, then what it consumes, wildcards left out
    (``budget_enforcer-costs-recorded`` for ``<ns>.costs.recorded.*``)."""
    tokens = [t for t in subject.split(".")[1:] if t not in ("*", ">")]
    return f"{service}-{'-'.join(tokens)}"
