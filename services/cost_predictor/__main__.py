from services.cost_predictor.app import SPEC
from shared.service import run

run(SPEC)
