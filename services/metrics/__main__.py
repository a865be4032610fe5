from routewise.runtime.service import run
from routewise.services.metrics.app import SERVICE

run(SERVICE)
