"""gateway: which event, request, notice, job and HTTP API goes to which handler."""

from pathlib import Path

from routewise.contracts.events import CostRecorded, FeedbackRecorded, ModelSelected, TaskArrived, TaskRejected
from routewise.runtime.catalog import WATCH_CATALOG
from routewise.runtime.service import Service, every
from routewise.services.gateway import api, handlers, keys, management

SERVICE = Service(
    name="gateway",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    http=api.http_app,
    requests={
        "keys_create": keys.create_key,
        "keys_list": keys.list_keys,
        "keys_revoke": keys.revoke_key,
    },
    notices={"cost_prices_changed": handlers.reload_prices},
    jobs=[
        every(handlers.RELOAD_PRICES_EVERY_S, handlers.reload_prices, until=handlers.catalog_published),
        every(handlers.PRUNE_CACHE_EVERY_S, handlers.prune_cache),
        WATCH_CATALOG,
    ],
    publishes=[TaskArrived, CostRecorded, FeedbackRecorded],
    # the requests of its own calls, and every one the management API sends
    asks=sorted({"routing_policies_list", "cost_prices_list", "budget_reserve", "budget_release", *management.ASKS}),
    reads_kv=["catalog_bucket"],
    listens=[ModelSelected, TaskRejected],
    retention={"attempts": "created_at", "cache_hits": "created_at"},
)
