"""budget-enforcer: spend per scope, budgets, reservations and alerts."""
