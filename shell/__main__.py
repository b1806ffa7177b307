"""``python -m shell [--node DIR] [--debug]``: the same as ``p2pstore shell``."""

from __future__ import annotations

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
