"""GroupCommit (chimeway/dispatch/batch.py): threads' requests run as batches, a lone request at once,
a failed batch answers ALONE to each of its requests, and every thread gets its own answer."""

from __future__ import annotations

import threading
import time

from chimeway.dispatch.batch import ALONE, GroupCommit


class Recorder:
    """A batch function that answers each request with its double, noting each batch; the first
    batch holds for ``hold`` seconds so that the other threads queue behind it."""

    def __init__(self, hold: float = 0.0, fail_on: int | None = None) -> None:
        self.hold = hold
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, requests: list[int]) -> list[int]:
        with self._lock:
            self.batches.append(list(requests))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            first = len(self.batches) == 1
        try:
            if first and self.hold:
                time.sleep(self.hold)
            if self.fail_on is not None and self.fail_on in requests:
                raise ValueError("a bad row")
            return [request * 2 for request in requests]
        finally:
            with self._lock:
                self.running -= 1


def submit_all(group: GroupCommit, requests: list[int], spacing: float = 0.01) -> dict[int, object]:
    """Each request from a thread of its own, ``spacing`` apart (the first one leads and, with a
    holding Recorder, holds; the others arrive while it runs); the answers."""
    answers: dict[int, object] = {}

    def one(request: int) -> None:
        answers[request] = group.submit(request)

    threads = [threading.Thread(target=one, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
        time.sleep(spacing)
    for thread in threads:
        thread.join(10)
    return answers


def test_a_lone_thread_runs_each_request_at_once_in_a_batch_of_its_own():
    recorder = Recorder()
    group = GroupCommit("test", recorder, max_size=32, max_wait_ms=100)
    assert [group.submit(n) for n in (21, 5, 7)] == [42, 10, 14]
    assert recorder.batches == [[21], [5], [7]]
    assert group.lingered == 0  # one busy thread never waits for company


def test_requests_arriving_while_a_batch_runs_share_the_next_statement():
    recorder = Recorder(hold=0.3)
    group = GroupCommit("test", recorder, max_size=32, max_wait_ms=0)
    answers = submit_all(group, list(range(1, 9)))
    assert answers == {n: 2 * n for n in range(1, 9)}
    assert recorder.batches[0] == [1]
    assert sorted(recorder.batches[1]) == list(range(2, 9))  # seven threads, one statement
    assert len(recorder.batches) == 2
    assert (group.batches, group.requests) == (2, 8)


def test_a_batch_never_takes_more_than_its_size():
    recorder = Recorder(hold=0.3)
    group = GroupCommit("test", recorder, max_size=3, max_wait_ms=0)
    answers = submit_all(group, list(range(1, 11)))
    assert answers == {n: 2 * n for n in range(1, 11)}
    assert max(len(batch) for batch in recorder.batches) == 3
    assert sorted(n for batch in recorder.batches for n in batch) == list(range(1, 11))


def test_a_failed_batch_answers_alone_to_each_of_its_requests_and_to_no_other():
    recorder = Recorder(hold=0.3, fail_on=5)
    group = GroupCommit("test", recorder, max_size=32, max_wait_ms=0)
    answers = submit_all(group, list(range(1, 9)))
    assert answers[1] == 2  # the batch before, unaffected
    assert {n: answers[n] for n in range(2, 9)} == {n: ALONE for n in range(2, 9)}
    assert group.submit(9) == 18  # the next batch runs as usual


def test_a_busy_leader_gathers_a_burst_of_requests_into_one_batch():
    recorder = Recorder(hold=0.3)
    group = GroupCommit("test", recorder, max_size=32, max_wait_ms=200)
    submit_all(group, list(range(1, 9)), spacing=0.002)  # [1] holds; [2..8] arrive 2 ms apart
    assert group.lingered == 0 and len(recorder.batches[1]) == 7  # the one before was not shared
    submit_all(group, [11, 12, 13, 14], spacing=0.003)  # a burst: the first leads and waits for the rest
    assert group.lingered == 1
    assert sorted(recorder.batches[2]) == [11, 12, 13, 14] and len(recorder.batches) == 3


def test_with_two_batches_at_a_time_requests_do_not_queue_behind_a_slow_one():
    recorder = Recorder(hold=0.5)
    group = GroupCommit("test", recorder, max_size=32, max_wait_ms=0, max_batches=2)
    answers = submit_all(group, list(range(1, 9)))
    assert answers == {n: 2 * n for n in range(1, 9)}
    assert recorder.batches[0] == [1]
    assert recorder.most_at_once == 2  # the others ran beside the slow first batch, not after it
    assert sorted(n for batch in recorder.batches[1:] for n in batch) == list(range(2, 9))


class Interrupted(BaseException):  # noqa: N818 - stands for Dramatiq's time limit or shutdown interrupt
    pass


def test_an_interrupted_leader_leaves_nobody_waiting():
    calls = []

    def interrupted_first(requests: list[int]) -> list[int]:
        calls.append(list(requests))
        if len(calls) == 1:
            time.sleep(0.3)  # the others queue behind this batch
            raise Interrupted
        return [request * 2 for request in requests]

    group = GroupCommit("test", interrupted_first, max_size=32, max_wait_ms=0)
    answers: dict[int, object] = {}

    def one(request: int) -> None:
        try:
            answers[request] = group.submit(request)
        except Interrupted:
            answers[request] = "interrupted"

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in (1, 2, 3)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(5)
    assert answers == {1: "interrupted", 2: 4, 3: 6}  # the lead passed on: the others ran their batch
    assert group.submit(5) == 10  # and the group still works
