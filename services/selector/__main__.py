from routewise.runtime.service import run
from routewise.services.selector.app import SERVICE

run(SERVICE)
