"""runner-fleet: self-hosted GitHub Actions runners on your own Linux machines, monitored.

Loads the validated stack config, builds the components, exports what a user looks for.
"""

from fleet.config import load
from fleet.hostkeys import check_before_deploy
from fleet.program import build_fleet, export_outputs

config = load()
# pulumi-command's SSH handshake has no timeout: check each machine first, bounded (fleet/hostkeys.py).
reach = check_before_deploy(config.stack, config.hosts, config.prometheus)
built = build_fleet(config, reach)
reach.raise_if_refused()  # after every other machine's components were declared
export_outputs(config, built)
