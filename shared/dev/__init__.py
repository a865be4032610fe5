"""The dev stack: embedded NATS and Postgres, provisioning, and the services as processes."""
