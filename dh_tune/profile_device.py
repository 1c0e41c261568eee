"""`python -m dh_tune.profile_device`: the former name of `python -m dh_tune.latency` (a latency table)."""
from __future__ import annotations

import sys

from .latency.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
