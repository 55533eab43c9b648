"""``python -m chimeway``: the same command line as ``chimeway``."""

import sys

from chimeway.cli import main

sys.exit(main())
