"""`python -m fleet ...` runs the `runner-fleet` command line (fleet/cli.py)."""

import sys

from fleet.cli import main

sys.exit(main())
