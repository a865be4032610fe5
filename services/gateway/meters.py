"""The gateway's Prometheus metrics (served at /metrics with the service's others)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Meters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "routewise_gateway_requests_total",
            "HTTP requests to /v1, by route and status code",
            ["route", "status"],
            registry=registry,
        )
        self.added_latency = Histogram(
            "routewise_gateway_added_latency_seconds",
            "Time a completion spent in the gateway (decision, bookkeeping) rather than at the provider",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decision_latency = Histogram(
            "routewise_gateway_decision_seconds",
            "From publishing TaskArrived to its decision",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.provider_latency = Histogram(
            "routewise_gateway_provider_latency_seconds",
            "Provider attempts' duration (a stream: to its end), by provider",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "routewise_gateway_attempts_total",
            "Provider attempts, by provider and outcome (ok, failed)",
            ["provider", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "routewise_gateway_provider_errors_total",
            "Failed provider attempts, by provider and error type (rate_limited, server_error, timeout, ...)",
            ["provider", "error_type"],
            registry=registry,
        )
        self.cache = Counter(
            "routewise_gateway_cache_total",
            "Completions by response-cache status: hit, miss, off (the request does not use the cache)",
            ["status"],
            registry=registry,
        )

    def attempt(self, provider: str, error_type: str | None, seconds: float) -> None:
        self.provider_latency.labels(provider).observe(seconds)
        self.attempts.labels(provider, "failed" if error_type else "ok").inc()
        if error_type:
            self.errors.labels(provider, error_type).inc()
