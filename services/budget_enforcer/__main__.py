from services.budget_enforcer.app import SPEC
from shared.service import run

run(SPEC)
