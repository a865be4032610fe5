from routewise.runtime.service import run
from routewise.services.gateway.app import SERVICE

run(SERVICE)
