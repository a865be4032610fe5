"""metrics' Prometheus meters of routing outcomes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from routewise.contracts.catalog import Catalog
from routewise.contracts.events import CostAdjusted, CostRecorded, ModelSelected, TaskRejected


class Meters:
    """Prometheus meters of routing outcomes, counted once per applied event (after its commit)."""

    def __init__(self, registry: CollectorRegistry, catalog: Catalog) -> None:
        self.decisions = Counter(
            "routewise_decisions_total", "Tasks given a model", ["strategy", "tier", "policy"], registry=registry
        )
        self.rejections = Counter("routewise_rejections_total", "Tasks rejected", ["reason"], registry=registry)
        self.estimated_cost = Counter(
            "routewise_estimated_cost_usd_total", "Estimated cost of the chosen models (USD)", registry=registry
        )
        self.baseline_cost = Counter(
            "routewise_baseline_cost_usd_total", "Estimated cost of the baselines (USD)", registry=registry
        )
        self.estimated_savings = Counter(
            "routewise_estimated_savings_usd_total", "Baseline estimate minus chosen estimate (USD)", registry=registry
        )
        self.actual_cost = Counter(
            "routewise_actual_cost_usd_total",
            "What the calls really cost (USD), by catalog model ('other' for a model outside the catalog)",
            ["model"],
            registry=registry,
        )
        self.catalog: frozenset[str] = frozenset()
        self.use_catalog(catalog)
        self.adjustments = Counter(
            "routewise_cost_adjustments_total",
            "Recorded costs corrected or voided (CostAdjusted), by direction (up, down)",
            ["direction"],
            registry=registry,
        )
        self.adjusted_cost = Counter(
            "routewise_cost_adjusted_usd_total",
            "How much adjustments moved actual costs (USD), by direction: the actual cost counter counts"
            " costs as recorded; the real total is it plus up minus down",
            ["direction"],
            registry=registry,
        )
        self.decision_latency = Histogram(
            "routewise_decision_latency_seconds",
            "Time the selector took to decide a task",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )

    def use_catalog(self, catalog: Catalog) -> None:
        """Label costs by the models of this catalog (the live one: a registered model has its own)."""
        self.catalog = frozenset(m.id for m in catalog.models)

    def selected(self, event: ModelSelected) -> None:
        self.decisions.labels(event.strategy, event.tier.value, event.policy or "").inc()
        self.estimated_cost.inc(float(event.estimated_cost_usd))
        self.baseline_cost.inc(float(event.baseline_cost_usd))
        self.estimated_savings.inc(max(float(event.baseline_cost_usd - event.estimated_cost_usd), 0.0))
        self.decision_latency.observe(event.decision_latency_ms / 1000)

    def rejected(self, event: TaskRejected) -> None:
        self.rejections.labels(event.reason.value).inc()

    def cost(self, event: CostRecorded) -> None:
        # the model name is the application's; a label per name it invents would grow without bound
        model = event.model if event.model in self.catalog else "other"
        self.actual_cost.labels(model).inc(float(event.cost_usd))

    def adjusted(self, event: CostAdjusted) -> None:
        direction = "up" if event.delta_usd > 0 else "down"
        self.adjustments.labels(direction).inc()
        self.adjusted_cost.labels(direction).inc(abs(float(event.delta_usd)))
