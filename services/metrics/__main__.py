from services.metrics.app import SERVICE
from shared.service import run

run(SERVICE)
