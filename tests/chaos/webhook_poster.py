"""A provider's delivery loop, in miniature: POST each signed event when due, retry on 5xx like providers do.

Jobs wait in a time-ordered heap; a few threads post them over keep-alive connections to the WSGI
app. A 401 is final (that is what a forged event must get); a 5xx or a connection error is retried
with a growing delay, so an event sent while PostgreSQL restarts arrives later, as it would from a
real provider. Besides posting events, the same scheduler runs other delayed jobs (duplicate
messages) so that everything "later" in the run goes through one bounded queue.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.harness.webhooks import PROVIDER, SignedEvent

MAX_TRIES = 30


@dataclass(order=True)
class Job:
    due: float
    seq: int
    run: Callable[[Job], bool] = field(compare=False)  #: True when done, False to retry
    tries: int = field(default=0, compare=False)


class Poster:
    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.heap: list[Job] = []
        self.cond = threading.Condition()
        self.seq = itertools.count()
        self.stopping = False
        self.busy = 0
        self.statuses: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.failures_at: list[float] = []  #: when a POST got a 5xx or no answer (monotonic)
        self.local = threading.local()
        self.threads = [threading.Thread(target=self._loop, name=f"poster-{i}", daemon=True) for i in range(threads)]
        for thread in self.threads:
            thread.start()

    # --- scheduling -------------------------------------------------------------------------------

    def at(self, delay: float, run: Callable[[Job], bool]) -> None:
        with self.cond:
            heapq.heappush(self.heap, Job(time.monotonic() + delay, next(self.seq), run))
            self.cond.notify()

    def post_later(self, delay: float, event: SignedEvent, kind: str) -> None:
        self.at(delay, lambda job: self._deliver(event, kind, job))

    def pending(self) -> int:
        with self.cond:
            return len(self.heap) + self.busy

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.pending()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout=35)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (not self.heap or self.heap[0].due > time.monotonic()):
                    self.cond.wait(timeout=max(0.01, self.heap[0].due - time.monotonic()) if self.heap else 1.0)
                if self.stopping:
                    return
                job = heapq.heappop(self.heap)
                self.busy += 1
            try:
                done = job.run(job)
            except Exception:
                done = False
            with self.cond:
                self.busy -= 1
                if not done and job.tries < MAX_TRIES:
                    job.tries += 1
                    job.due = time.monotonic() + min(0.2 * 2 ** min(job.tries, 4), 3.0)
                    heapq.heappush(self.heap, job)
                    self.cond.notify()
                elif not done:
                    self.outcomes["gave_up"] += 1

    # --- posting ----------------------------------------------------------------------------------

    def post(self, event: SignedEvent, timeout: float = 10.0) -> int | None:
        """One POST; the status, or None when the connection failed."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", f"/webhooks/{PROVIDER}", body=event.body, headers=event.headers)
            response = conn.getresponse()
            response.read()
            status: int | None = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            status = None
        with self.cond:
            self.statuses[str(status)] += 1
            if status is None or status >= 500:
                self.failures_at.append(time.monotonic())
        return status

    def _deliver(self, event: SignedEvent, kind: str, job: Job) -> bool:
        status = self.post(event)
        if status is None or status >= 500:
            return False  # the provider retries
        with self.cond:
            self.outcomes[f"{kind}:{status}"] += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        with self.cond:
            return {"http_statuses": dict(self.statuses), "final": dict(self.outcomes)}
