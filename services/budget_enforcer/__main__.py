from routewise.runtime.service import run
from routewise.services.budget_enforcer.app import SERVICE

run(SERVICE)
