from services.budget_enforcer.app import SERVICE
from shared.service import run

run(SERVICE)
