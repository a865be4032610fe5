"""What travels on the bus: events, request/reply contracts, subjects, the shared vocabulary, the model catalog."""
