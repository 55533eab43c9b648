"""Progress lines on stderr, stamped with the seconds since the harness started (stdout is for results)."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - _START
