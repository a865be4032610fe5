from services.selector.app import SERVICE
from shared.service import run

run(SERVICE)
