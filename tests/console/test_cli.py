"""``chimeway show``, ``chimeway redrive`` and ``chimeway console`` as a user runs them: real processes."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import chimeway
from chimeway.ops import operator_record
from chimeway.states import Reason, Status
from chimeway.store import deliveries
from chimeway.wiring import runtime as runtime_mod
from tests.acceptance.test_cli import chimeway as run_cli
from tests.harness.processes import Supervisor
from tests.harness.servers import Reaper, free_port, wait_for_port
from tests.harness.stack import BIN, chimeway_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def runtime(pg_runtime: runtime_mod.Runtime) -> runtime_mod.Runtime:
    return pg_runtime


@pytest.fixture
def env(runtime: runtime_mod.Runtime) -> dict[str, str]:
    s = runtime.settings
    return {"CHIMEWAY_DATABASE_URL": s.database_url, "CHIMEWAY_REDIS_URL": s.redis_url,
            "CHIMEWAY_REDIS_NAMESPACE": s.redis_namespace}


def exhausted(recipient: str = "ada@example.com") -> str:
    """A delivery whose only attempt failed temporarily: cancelled(retries_exhausted), no worker needed."""
    delivery = chimeway.send("email", recipient, {"text": "private"}, max_attempts=1)
    deliveries.claim(delivery.id, lease_seconds=60)
    deliveries.record(delivery.id, 1, outcome="failed", error_class="temporary", adapter="fake",
                      status=Status.CANCELLED, reason=Reason.RETRIES_EXHAUSTED, provider_response={"status": 503})
    return delivery.id


def test_given_no_console_credentials_then_the_console_exits_with_one_line_naming_both(tmp_path):
    result = run_cli("console", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "CHIMEWAY_CONSOLE_USER" in result.stderr and "CHIMEWAY_CONSOLE_PASSWORD" in result.stderr


def test_given_no_auth_on_a_public_host_then_the_console_refuses(tmp_path):
    result = run_cli("console", "--no-auth", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1 and "loopback" in result.stderr and "Traceback" not in result.stderr


def test_given_an_exhausted_delivery_when_shown_then_the_timeline_is_printed(runtime, env, tmp_path):
    delivery_id = exhausted()
    shown = run_cli("show", delivery_id, "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["delivery"]["status"] == "cancelled" and "payload" not in data["delivery"]
    assert [e["kind"] for e in data["entries"]] == ["created", "attempt", "cancelled"]
    assert data["entries"][1]["summary"] == "attempt 1 via fake: temporary (503)"
    human = run_cli("show", delivery_id, cwd=tmp_path, env=env)
    assert "cancelled: retries_exhausted" in human.stdout and "private" not in human.stdout
    missing = run_cli("show", "00000000-0000-0000-0000-000000000000", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no delivery" in missing.stderr


def test_given_an_exhausted_delivery_when_redriven_from_the_cli_then_it_is_pending_and_recorded(
    runtime, env, tmp_path
):
    delivery_id = exhausted()
    result = run_cli("redrive", delivery_id, "--max-attempts", "2", "--why", "key rotated", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    delivery = chimeway.get_delivery(delivery_id)
    assert (delivery.status, delivery.max_attempts) == ("pending", 3)
    [action] = operator_record.for_delivery(delivery_id)
    assert action.actor.startswith("user:") and action.reason == "key rotated"
    again = run_cli("redrive", delivery_id, cwd=tmp_path, env=env)
    assert again.returncode == 1 and "nothing was changed" in again.stderr


def test_given_outage_casualties_when_bulk_redriven_with_dry_run_then_nothing_changes(runtime, env, tmp_path):
    ids = sorted(exhausted(f"r{i}@example.com") for i in range(3))
    dry = run_cli("redrive", "--reason", "retries_exhausted", "--since", "2h", "--adapter", "fake", "--dry-run",
                  "--json", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert sorted(json.loads(dry.stdout)["ids"]) == ids
    assert {chimeway.get_delivery(i).status for i in ids} == {"cancelled"}
    done = run_cli("redrive", "--reason", "retries_exhausted", "--since", "2h", "--json", cwd=tmp_path, env=env)
    assert json.loads(done.stdout)["redriven"] == 3
    assert {chimeway.get_delivery(i).status for i in ids} == {"pending"}
    usage = run_cli("redrive", "--reason", "retries_exhausted", "--since", "soon", cwd=tmp_path, env=env)
    assert usage.returncode == 2


def test_given_a_running_console_when_searching_by_recipient_then_the_log_holds_no_recipient(
    runtime, env, tmp_path: Path
):
    delivery_id = exhausted("secret.person@example.com")
    port = free_port()
    reaper = Reaper()
    supervisor = Supervisor(tmp_path, reaper, cwd=str(tmp_path))
    process = supervisor.add("console", [str(BIN / "chimeway"), "console", "--port", str(port)], chimeway_env(
        env["CHIMEWAY_DATABASE_URL"], env["CHIMEWAY_REDIS_URL"], redis_namespace=env["CHIMEWAY_REDIS_NAMESPACE"],
        console_user="ops", console_password="pw"), keep_alive=False)
    try:
        supervisor.start("console")
        wait_for_port(port, 30)
        url = f"http://127.0.0.1:{port}/deliveries?q=secret.person%40example.com"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        refused.value.close()  # the error holds the response's socket
        request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert delivery_id in reply.read().decode()
        # The server logs a request after answering it: wait for the line before stopping it.
        wait_until(lambda: "GET /deliveries 200" in process.log.read_text(), 30, what="the request log line")
    finally:
        supervisor.stop_all()
        reaper.close()
    log = process.log.read_text()
    assert "GET /deliveries 200" in log and "secret.person" not in log
