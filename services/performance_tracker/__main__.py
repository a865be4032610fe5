from services.performance_tracker.app import SERVICE
from shared.service import run

run(SERVICE)
