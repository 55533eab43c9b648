"""Through real worker processes (``dramatiq chimeway.worker``) on PostgreSQL and Redis: crashes,
duplicates, concurrent claims, connection use, the ExhaustionGuard and telemetry hygiene.

Each test runs on its own Redis key namespace and the session's PostgreSQL database; workers run
in their own process group and are stopped (then killed) at the end of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import chimeway
from chimeway import db
from chimeway.dispatch.actors import QUEUE
from chimeway.dispatch.enqueue import enqueue
from chimeway.models import new_id
from chimeway.store import deliveries
from tests.harness.workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def logged_calls(call_log: Path, delivery_id: str) -> list[dict[str, Any]]:
    if not call_log.exists():
        return []
    lines = [json.loads(line) for line in call_log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["delivery_id"] == delivery_id]


def status_of(delivery_id: str) -> str:
    return chimeway.get_delivery(delivery_id).status


def create(outcomes: list[str], max_attempts: int = 5) -> Any:
    delivery, _ = deliveries.create(
        channel="email", recipient="ann@example.com", adapter="fake", payload={"fake_outcomes": outcomes},
        metadata={}, tenant_id="default", notification_id=new_id(), idempotency_key=None,
        max_attempts=max_attempts, delay_fallback=False, category=None,
    )
    return delivery


def all_messages_done(redis_runtime: Any) -> bool:
    """No deliver message is queued, delayed or unacknowledged in this test's namespace."""
    namespace = redis_runtime.settings.redis_namespace
    return redis_runtime.redis.hlen(f"{namespace}:{QUEUE}.msgs") == 0 and redis_runtime.redis.hlen(
        f"{namespace}:{QUEUE}.DQ.msgs") == 0


def test_given_a_worker_killed_with_sigkill_mid_send_then_the_delivery_still_succeeds_with_at_most_one_extra_call(
    redis_runtime, workers, call_log
):
    workers.start(threads=1, env={"CHIMEWAY_LEASE_SECONDS": "5"})
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["sleep:20000", "ok"]})
    first = wait_for(lambda: logged_calls(call_log, sent.id), 20, "the first adapter call")[0]
    os.kill(first["pid"], signal.SIGKILL)  # the worker process that is inside the adapter call
    lease_until = chimeway.get_delivery(sent.id).lease_until
    wait_for(lambda: db.now() > lease_until, 10, "the dead worker's lease to expire")
    workers.start(threads=1)  # its maintenance returns the dead worker's unacknowledged message
    wait_for(lambda: status_of(sent.id) == "succeeded", 30, "the delivery to succeed")
    calls = logged_calls(call_log, sent.id)
    assert len(calls) == 2 and calls[0]["pid"] != calls[1]["pid"]
    assert [a.attempt_number for a in chimeway.attempts(sent.id)] == [2]


def test_given_ten_duplicate_messages_on_ten_worker_threads_then_the_adapter_is_called_once(
    redis_runtime, workers, call_log
):
    workers.start(processes=2, threads=5)
    delivery = create(["sleep:500"])
    for _ in range(10):
        assert enqueue(delivery.id, dedupe=False, runtime=redis_runtime)
    wait_for(lambda: status_of(delivery.id) == "succeeded", 30, "the delivery to succeed")
    wait_for(lambda: all_messages_done(redis_runtime), 30, "every duplicate to be processed")
    assert len(logged_calls(call_log, delivery.id)) == 1
    assert [a.attempt_number for a in chimeway.attempts(delivery.id)] == [1]


_CLAIM_SCRIPT = textwrap.dedent("""
    import sys, time
    from chimeway.store import deliveries
    from chimeway.wiring import runtime
    runtime.configure(database_url=sys.argv[1], redis_url="", environ={})
    deliveries.find(sys.argv[2])  # connected and warm before the common start
    while time.time() < float(sys.argv[3]):
        time.sleep(0.001)
    print(deliveries.claim(sys.argv[2], lease_seconds=60))
""")


def test_given_five_processes_claiming_one_delivery_at_the_same_moment_then_exactly_one_wins(redis_runtime, pg_url):
    delivery = create(["ok"])
    start_at = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM_SCRIPT, pg_url, delivery.id, start_at],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["1", "None", "None", "None", "None"]
    assert chimeway.get_delivery(delivery.id).attempt_count == 1


def test_given_200_messages_on_4_worker_threads_then_at_most_4_database_connections_are_open(
    redis_runtime, workers, pg_url
):
    application = f"cw-conn-{uuid.uuid4().hex[:10]}"
    created = [create(["sleep:10"]) for _ in range(200)]
    workers.start(threads=4, env={"CHIMEWAY_DATABASE_URL": f"{pg_url}?application_name={application}"})
    for delivery in created:
        enqueue(delivery.id, runtime=redis_runtime)
    watcher = psycopg2.connect(pg_url)
    watcher.autocommit = True
    peak = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with watcher.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,))
                peak = max(peak, cursor.fetchone()[0])
                cursor.execute("SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'")
                if cursor.fetchone()[0] == 200:
                    break
            time.sleep(0.01)
    finally:
        watcher.close()
    assert all(status_of(d.id) == "succeeded" for d in created)
    assert 1 <= peak <= 4


_REFUSE_EXHAUST = [
    "CREATE FUNCTION chimeway_test_refuse_exhaust() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'test: refusing retries_exhausted'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER chimeway_test_refuse_exhaust BEFORE UPDATE ON chimeway_deliveries FOR EACH ROW "
    "WHEN (NEW.reason = 'retries_exhausted') EXECUTE FUNCTION chimeway_test_refuse_exhaust()",
]


@pytest.fixture
def exhaustion_write_fails(redis_runtime):
    for statement in _REFUSE_EXHAUST:
        db.execute(statement)
    yield
    db.execute("DROP TRIGGER IF EXISTS chimeway_test_refuse_exhaust ON chimeway_deliveries")
    db.execute("DROP FUNCTION IF EXISTS chimeway_test_refuse_exhaust()")


def test_given_the_exhaustion_write_fails_in_a_worker_then_the_message_is_dead_lettered_and_logged_critical(
    redis_runtime, workers, exhaustion_write_fails
):
    _, log = workers.start(threads=2)
    sent = chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=2)
    dead_letters = f"{redis_runtime.settings.redis_namespace}:{QUEUE}.XQ"
    wait_for(lambda: redis_runtime.redis.zcard(dead_letters) == 1, 30, "the message to be dead-lettered")
    row = chimeway.get_delivery(sent.id)
    assert (row.status, row.attempt_count) == ("failed", 2)
    wait_for(lambda: any("CRITICAL" in line and sent.id in line for line in log.read_text().splitlines()), 10,
             "the CRITICAL log naming the delivery")


_TELEMETRY_PROBE = textwrap.dedent("""
    import json, os
    from chimeway import telemetry

    def record(event, phase, metadata):
        with open(os.environ["CHIMEWAY_TEST_TELEMETRY_LOG"], "a") as out:
            out.write(json.dumps([event, phase, metadata], default=str) + "\\n")

    telemetry.attach(record)
""")


def test_given_a_worker_process_then_its_telemetry_metadata_never_holds_the_recipient_or_payload(
    redis_runtime, workers, tmp_path
):
    (tmp_path / "chimeway_telemetry_probe.py").write_text(_TELEMETRY_PROBE)
    telemetry_log = tmp_path / "telemetry.jsonl"
    workers.start(threads=2, extra=("chimeway_telemetry_probe", "--path", str(tmp_path)),
                  env={"CHIMEWAY_TEST_TELEMETRY_LOG": str(telemetry_log)})
    recipient, body = "zelda.secret@example.com", "the-very-private-body"
    ids = [chimeway.send("email", recipient, {"body": body, "fake_outcomes": script}, max_attempts=2).id
           for script in (["ok"], ["temporary", "ok"], ["permanent"], ["garbage"], ["crash"])]
    wait_for(lambda: all(chimeway.get_delivery(i).is_terminal for i in ids), 30, "every delivery to finish")
    wait_for(lambda: all_messages_done(redis_runtime), 30, "every message to be acknowledged")
    text = telemetry_log.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    assert {(event, phase) for event, phase, _ in events} >= {("perform", "stop"), ("attempt_record", "stop")}
    assert {m.get("delivery_id") for _, _, m in events} >= set(ids)
    assert recipient not in text and body not in text and "fake_outcomes" not in text
