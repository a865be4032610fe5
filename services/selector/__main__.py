from services.selector.app import SPEC
from shared.service import run

run(SPEC)
