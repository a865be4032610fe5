from services.performance_tracker.app import SPEC
from shared.service import run

run(SPEC)
