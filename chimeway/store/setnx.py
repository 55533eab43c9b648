"""``SET key NX`` with an expiry: in Redis when the runtime has it, else in an in-memory table.

The one home of "the first to set this key for a while wins", used by the fresh-send dedupe
(``dispatch/enqueue.py``), the reconcile run claim (``webhooks/reconciler.py``) and the scheduler's
tick claim (``scheduler.py``); docs/architecture.md §7. In memory the keys are this process's own,
which is all the stub broker has: there are no other processes to agree with.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: Past this many keys the in-memory table drops the expired ones (it never grows without bound).
_PRUNE_ABOVE = 10_000


class SetNX:
    def __init__(self, client: Any = None) -> None:
        self.client = client  #: a redis.Redis, or None for the in-memory table
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def first(self, key: str, ttl_seconds: float) -> bool:
        """Set ``key`` for ``ttl_seconds`` unless it is set already; True when this call set it."""
        if self.client is not None:
            return bool(self.client.set(key, b"1", nx=True, px=int(ttl_seconds * 1000)))
        now = time.monotonic()
        with self._lock:
            if self._until.get(key, 0.0) > now:
                return False
            if len(self._until) > _PRUNE_ABOVE:
                self._until = {k: until for k, until in self._until.items() if until > now}
            self._until[key] = now + ttl_seconds
            return True

    def forget(self, key: str) -> None:
        """Clear ``key`` so the next :meth:`first` wins again."""
        if self.client is not None:
            self.client.delete(key)
            return
        with self._lock:
            self._until.pop(key, None)
