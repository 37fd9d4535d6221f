"""``python -m rewardlab.cli``: the command line (as the ``rewardlab`` script)."""

import sys

from rewardlab.cli.main import main

sys.exit(main())
