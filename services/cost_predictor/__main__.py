from routewise.runtime.service import run
from routewise.services.cost_predictor.app import SERVICE

run(SERVICE)
