from routewise.runtime.service import run
from routewise.services.performance_tracker.app import SERVICE

run(SERVICE)
