"""The ``chimeway`` command line as a user runs it: real processes, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def chimeway(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "chimeway", *args], cwd=cwd, env=clean, capture_output=True, text=True,
        timeout=timeout,
    )


def test_given_an_empty_directory_and_no_settings_when_running_the_demo_twice_then_both_succeed(tmp_path):
    first = chimeway("demo", "--count", "120", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Chimeway demo — summary" in first.stdout
    assert "orphans linked by reconcile" in first.stdout
    assert (tmp_path / "chimeway.sqlite3").exists()
    second = chimeway("demo", "--count", "120", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["sent"] == 120
    assert sum(report["deliveries"].values()) == 121  # plus the follow-up to a bounced address
    assert report["deliveries"]["suppressed/recipient_suppressed"] == 1
    assert report["orphans_linked"] == report["orphans_before_commit"] > 0
    assert set(report["webhooks"]) == {"200"}


def test_given_a_bad_database_url_then_one_line_names_the_variable(tmp_path):
    result = chimeway("status", cwd=tmp_path, env={"CHIMEWAY_DATABASE_URL": "mysql://nope"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CHIMEWAY_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_given_debug_then_the_traceback_is_shown(tmp_path):
    result = chimeway("--debug", "status", cwd=tmp_path, env={"CHIMEWAY_DATABASE_URL": "mysql://nope"})
    assert result.returncode == 1 and "Traceback" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        [],
        ["send", "email"],
        ["send", "email", "a@example.com", "--payload", "{not json"],
        ["send", "email", "a@example.com", "--payload", "[1, 2]"],
        ["send", "email", "a@example.com", "--set", "novalue"],
        ["reconcile", "--batch-size", "0"],
        ["prune", "--days", "-3"],
        ["webhooks", "listen"],
        ["status", "--verbose"],
    ],
)
def test_given_a_usage_error_then_the_exit_code_is_2_without_a_traceback(tmp_path, args):
    result = chimeway(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_given_a_send_that_cannot_be_delivered_then_one_line_names_the_option_and_nothing_is_stored(tmp_path, redis_url, redis_namespace):
    with_redis = {"CHIMEWAY_REDIS_URL": redis_url, "CHIMEWAY_REDIS_NAMESPACE": redis_namespace}
    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    refused = {
        "recipient": ["send", "email", "   "],
        "--payload": ["send", "email", "a@example.com", "--payload", '{"total": NaN}'],
        "--max-attempts": ["send", "email", "a@example.com", "--max-attempts", "0"],
    }
    for named, args in refused.items():
        result = chimeway(*args, cwd=tmp_path, env=with_redis)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"chimeway send: error: {named}: "), lines
    first = chimeway("send", "email", "a@example.com", "--idempotency-key", "k-1", "--set", "n=1", cwd=tmp_path,
                     env=with_redis)
    assert first.returncode == 0, first.stderr
    conflict = chimeway("send", "email", "a@example.com", "--idempotency-key", "k-1", "--set", "n=2", cwd=tmp_path,
                        env=with_redis)
    assert conflict.returncode == 2
    assert conflict.stderr.strip() == (
        "chimeway send: error: --idempotency-key: key 'k-1' was first used for a send with a different payload"
    )
    status = json.loads(chimeway("status", "--json", cwd=tmp_path).stdout)
    assert status["table_estimates"]["chimeway_deliveries"] == 1


def test_the_happy_path_of_each_data_command(tmp_path, redis_url, redis_namespace):
    with_redis = {"CHIMEWAY_REDIS_URL": redis_url, "CHIMEWAY_REDIS_NAMESPACE": redis_namespace}
    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    migrated = chimeway("migrate", "--json", cwd=tmp_path)
    from chimeway.store.migrator import load_migrations

    assert json.loads(migrated.stdout) == {"applied": [], "version": len(load_migrations("sqlite"))}

    sent = chimeway("send", "email", "a@example.com", "--adapter", "log", "--set", "subject=Hi", "--json",
                    cwd=tmp_path, env=with_redis)
    assert sent.returncode == 0, sent.stderr
    delivery = json.loads(sent.stdout)
    assert delivery["status"] == "pending" and delivery["adapter"] == "log"

    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({"subject": "From a file"}))
    from_file = chimeway("send", "email", "b@example.com", "--payload-file", str(payload_file), cwd=tmp_path,
                         env=with_redis)
    assert from_file.returncode == 0 and "recorded" in from_file.stdout

    status = json.loads(chimeway("status", "--json", cwd=tmp_path).stdout)
    assert status["table_estimates"]["chimeway_deliveries"] == 2
    assert status["open"]["pending"] == 2
    human = chimeway("status", cwd=tmp_path)
    assert "pending" in human.stdout and "orphan backlog" in human.stdout
    assert "a@example.com" not in human.stdout + json.dumps(status)  # recipients are never shown

    reconciled = json.loads(chimeway("reconcile", "--json", cwd=tmp_path).stdout)
    assert reconciled == {"scanned": 0, "linked": 0}
    swept = chimeway("sweep", "--json", cwd=tmp_path, env=with_redis)
    assert swept.returncode == 0 and json.loads(swept.stdout)["reenqueued"] == 0  # both are fresh, not lost
    pruned = json.loads(chimeway("prune", "--days", "1", "--json", cwd=tmp_path).stdout)
    assert pruned["deleted"] == 0 and pruned["deliveries"] == 0 and pruned["retention_days"] == 90


def test_prune_dry_run_says_what_it_would_remove_and_removes_nothing(tmp_path):
    # Given a database with one terminal delivery (an attempt, an event) from 200 days ago and an open one
    from datetime import timedelta

    from chimeway import db
    from chimeway.models import Attempt, Delivery, Event, new_id
    from chimeway.wiring import runtime as runtime_mod

    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    runtime_mod.configure(database_url=f"sqlite:///{tmp_path / 'chimeway.sqlite3'}", redis_url="", environ={})
    try:
        at = db.now() - timedelta(days=200)
        for status in ("succeeded", "pending"):
            row = Delivery.create(notification_id=new_id(), channel="email", recipient="ann@example.com",
                                  adapter="log", status=status, created_at=at, updated_at=at)
            Attempt.create(delivery_id=row.id, attempt_number=1, outcome="failed", adapter="log", created_at=at)
            Event.create(delivery_id=row.id, type="sent", provider="log", occurred_at=at, received_at=at)
    finally:
        runtime_mod.reset()
    # When prune runs with --dry-run, then for real
    dry = chimeway("prune", "--dry-run", cwd=tmp_path)
    dry_json = json.loads(chimeway("prune", "--dry-run", "--json", cwd=tmp_path).stdout)
    real = json.loads(chimeway("prune", "--json", cwd=tmp_path).stdout)
    # Then the dry run names what the real run removed, and removed nothing itself
    assert dry.returncode == 0 and "would remove 1 deliveries, 1 attempts, 1 events" in dry.stdout
    assert dry_json["dry_run"] is True
    assert {k: dry_json[k] for k in ("deliveries", "attempts", "events")} == {"deliveries": 1, "attempts": 1, "events": 1}
    assert {k: real[k] for k in ("deliveries", "attempts", "events")} == {"deliveries": 1, "attempts": 1, "events": 1}
    status = json.loads(chimeway("status", "--json", cwd=tmp_path).stdout)
    assert status["open"]["pending"] == 1 and status["retention"]["days"] == 90


def test_webhooks_serve_answers_a_real_request_and_stops_on_sigterm(tmp_path):
    import signal
    import socket
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["CHIMEWAY_MAILGUN_WEBHOOK_SIGNING_KEY"] = "k"
    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "chimeway.ops.cli", "webhooks", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "listening" in server.stdout.readline()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/mailgun", data=b'{"signature": {}}', method="POST",
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + 10
        with pytest.raises(urllib.error.HTTPError) as caught:
            while True:
                try:
                    urllib.request.urlopen(request, timeout=5).close()
                    break
                except urllib.error.URLError as err:
                    if isinstance(err, urllib.error.HTTPError) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        assert caught.value.code == 401  # unsigned: refused, nothing stored
        caught.value.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    status = json.loads(chimeway("status", "--json", cwd=tmp_path).stdout)
    assert status["table_estimates"]["chimeway_webhook_events"] == 0


def test_the_scheduler_fires_its_ticks_and_stops_cleanly_on_sigterm(tmp_path, redis_url, redis_namespace):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update(
        CHIMEWAY_REDIS_URL=redis_url, CHIMEWAY_REDIS_NAMESPACE=redis_namespace,
        CHIMEWAY_SWEEP_CRON="* * * * * *",  # every second (croniter's seconds field)
    )
    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "chimeway.ops.cli", "scheduler"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert scheduler.stdout.readline().startswith("scheduler running: reconcile")
        time.sleep(2.5)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=20)
    assert scheduler.returncode == 0, err
    assert "fired sweep" in out
