"""What a service runs on: settings, the bus, Postgres, the outbox, telemetry, logs, and the service runtime."""
