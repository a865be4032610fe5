"""metrics: the routing ledger (decision, baseline, estimate, actual cost) and savings."""
