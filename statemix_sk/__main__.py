"""``python -m statemix_sk``: the same as the ``statemix-sk`` command."""

import sys

from .cli import main

sys.exit(main())
