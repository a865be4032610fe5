"""Code every Routewise service and client shares: contracts, subjects, bootstrap, SDK, CLI."""
