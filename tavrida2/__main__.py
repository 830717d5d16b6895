"""``python -m tavrida2``: the ``tavrida2`` command (how a supervisor starts its workers)."""

import sys

from tavrida2.cli import main

sys.exit(main())
