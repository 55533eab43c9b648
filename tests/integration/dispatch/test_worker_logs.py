"""What a real worker's log says about failed attempts (issue 10 item 2, issue 11 "logs that explain").

Each test starts ``dramatiq chimeway.worker`` and reads its output: Dramatiq's own format,
``[time] [PID] [thread] [logger] [LEVEL] message`` with any traceback on the lines below.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import chimeway
from tests.harness.workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RECIPIENT = "zelda.secret@example.com"
_HEAD = re.compile(r"^\[[^]]+\] \[PID \d+\] \[[^]]+\] \[(?P<logger>[^]]+)\] \[(?P<level>[A-Z]+)\] (?P<message>.*)$")


@dataclass
class Record:
    logger: str
    level: str
    message: str
    traceback: str  #: the lines logged below the message (empty without exc_info)


def records(log: Path) -> list[Record]:
    found: list[Record] = []
    for line in log.read_text().splitlines():
        head = _HEAD.match(line)
        if head:
            found.append(Record(head["logger"], head["level"], head["message"], ""))
        elif found:
            found[-1].traceback += line + "\n"
    return found


def about(log: Path, delivery_id: str) -> list[Record]:
    return [r for r in records(log) if delivery_id in r.message]


def finished(delivery_id: str, log: Path, last_words: str) -> None:
    """Wait for the delivery to end, then (a little) for ``last_words`` about it to reach the log; the
    assertions that follow say what is missing."""
    wait_for(lambda: chimeway.get_delivery(delivery_id).is_terminal, 30, "the delivery to finish")
    with contextlib.suppress(AssertionError):
        wait_for(lambda: any(last_words in r.message for r in about(log, delivery_id)), 5, "the log")


@pytest.mark.parametrize(("script", "did"), [("crash", "raised FakeCrash"), ("garbage", "returned dict, not a SendResult")])
def test_given_an_adapter_that_raises_or_returns_garbage_then_each_attempt_logs_one_error_naming_unhandled_outcome_error(
    redis_runtime, workers, script, did
):
    _, log = workers.start(threads=2)
    sent = chimeway.send("email", RECIPIENT, {"body": "the-very-private-body", "fake_outcomes": [script]},
                         max_attempts=2)
    # the last words: the ERROR of the last attempt comes first, then this WARNING once it converged
    finished(sent.id, log, "no attempt left: cancelled(retries_exhausted)")

    errors = [r for r in about(log, sent.id) if r.level == "ERROR"]
    assert len(errors) == 2  # one per attempt, and nothing else at ERROR about this delivery
    first, second = errors
    assert first.message.startswith(f"UnhandledOutcomeError: unhandled outcome for delivery {sent.id}: "
                                    "outcome=rejected error_class=unknown_classification status=failed attempt=1/2")
    assert f"(adapter fake {did}); next attempt at 20" in first.message
    assert "attempt=2/2" in second.message and second.message.endswith("no attempt left")
    for error in errors:
        assert "chimeway.errors.UnhandledOutcomeError: unhandled outcome for delivery" in error.traceback
    if script == "crash":  # the traceback reaches into the adapter; the exception's message stays on the row
        assert 'adapters/fake.py", line' in first.traceback and 'raise FakeCrash("fake: scripted crash")' in first.traceback
        assert "AdapterRaised: adapter fake raised FakeCrash" in first.traceback
    [final] = [r for r in about(log, sent.id) if "no attempt left: cancelled(retries_exhausted)" in r.message]
    assert (final.level, final.message) == (
        "WARNING", f"delivery {sent.id}: attempt 2/2 via fake rejected (adapter fake {did}); "
        "no attempt left: cancelled(retries_exhausted)")
    text = log.read_text()
    assert "Retrying message" not in text and "Failed to process message" not in text and "returned FakeCrash" not in text
    assert RECIPIENT not in text and "the-very-private-body" not in text
    assert "FakeCrash: fake: scripted crash" not in text  # the exception itself (its message) is never logged
    stored = [a.error_message for a in chimeway.attempts(sent.id)]
    assert stored == (["FakeCrash: fake: scripted crash"] * 2 if script == "crash"
                      else ["adapter returned dict, not a SendResult"] * 2)
    delivery = chimeway.get_delivery(sent.id)
    assert (delivery.status, delivery.reason) == ("cancelled", "retries_exhausted")


def test_given_temporary_failures_then_each_attempt_logs_one_info_line_and_the_exhausted_delivery_says_it_converged(
    redis_runtime, workers
):
    _, log = workers.start(threads=2)
    retried = chimeway.send("email", RECIPIENT, {"fake_outcomes": ["temporary", "temporary", "ok"]})
    exhausted = chimeway.send("email", RECIPIENT, {"fake_outcomes": ["temporary"]}, max_attempts=2)
    wait_for(lambda: chimeway.get_delivery(retried.id).status == "succeeded", 30, "the retried delivery to succeed")
    finished(exhausted.id, log, "no attempt left")

    lines = [(r.logger, r.level, r.message) for r in about(log, retried.id)]
    assert [line[:2] for line in lines] == [("chimeway.dispatch", "INFO")] * 2
    for number, (_, _, message) in enumerate(lines, start=1):
        assert re.fullmatch(
            rf"delivery {retried.id}: attempt {number}/5 via fake failed \(adapter fake raised TemporaryError\); "
            r"next attempt at 20\S+", message)
    converged = [(r.level, r.message) for r in about(log, exhausted.id)]
    assert [level for level, _ in converged] == ["INFO", "WARNING"]
    assert converged[1][1] == (f"delivery {exhausted.id}: attempt 2/2 via fake failed (adapter fake raised "
                               "TemporaryError); no attempt left: cancelled(retries_exhausted)")
    dramatiq_per_message = [r for r in records(log) if r.logger.startswith("dramatiq") and "essage" in r.message
                            and "ready for action" not in r.message]
    assert dramatiq_per_message == []  # no "Retrying message", "Failed to process message", "Aborting message"
    assert RECIPIENT not in log.read_text()
