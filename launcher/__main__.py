"""``python -m launcher``: start the whole stack on this machine (what ``make run`` runs)."""

from __future__ import annotations

import sys

from launcher.stack import main

if __name__ == "__main__":
    sys.exit(main())
