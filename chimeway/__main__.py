"""``python -m chimeway``: the same command line as ``chimeway``."""

import sys

from chimeway.ops.cli import main

sys.exit(main())
