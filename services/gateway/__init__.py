"""gateway: an OpenAI-compatible HTTP API that routes each call, runs it on the provider, walks the
fallback chain and records the exact cost; one more client of the bus."""
