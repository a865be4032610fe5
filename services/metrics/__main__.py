from services.metrics.app import SPEC
from shared.service import run

run(SPEC)
