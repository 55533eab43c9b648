"""Sweeps running at the same moment share the work without sending any row twice (both dialects)."""

from __future__ import annotations

import threading
from collections import Counter

from chimeway.api import sweep
from chimeway.dispatch.sweep import SweepResult


def test_four_concurrent_sweeps_never_enqueue_the_same_row_twice(many_lost, queued) -> None:
    # Given 300 lost deliveries
    ids = many_lost(300)
    results: list[SweepResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            for _ in range(3):
                results.append(sweep(batch_size=25))
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    # When four threads sweep at the same moment, three times each
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then every row was re-enqueued exactly once
    assert errors == []
    swept = Counter(i for result in results for i in result.delivery_ids)
    assert set(swept) == set(ids) and set(swept.values()) == {1}
    assert Counter(queued()) == Counter(dict.fromkeys(ids, 1))
