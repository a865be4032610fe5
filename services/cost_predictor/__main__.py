from services.cost_predictor.app import SERVICE
from shared.service import run

run(SERVICE)
