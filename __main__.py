"""runner-fleet: self-hosted GitHub Actions runners on your own Linux machines, monitored.

Loads the validated stack config, builds the components, exports what a user looks for.
"""

from fleet.config import load
from fleet.program import build_fleet, export_outputs

config = load()
export_outputs(config, build_fleet(config))
