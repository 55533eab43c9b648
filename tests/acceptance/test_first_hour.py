"""A new user's first hour with the ``chimeway`` command: real processes, real databases.

``python -m chimeway``, commands that would lose their messages without Redis, adapters whose secrets
only the workers hold, mistyped variables, passwords in bad URLs and the demo's confirmation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.acceptance.test_cli import chimeway
from tests.adapters.distribution import write_pigeon_distribution

pytestmark = pytest.mark.slow


def test_given_python_dash_m_chimeway_then_it_is_the_chimeway_command(tmp_path):
    migrated = chimeway("migrate", "--json", cwd=tmp_path)  # the helper runs `python -m chimeway`
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["version"] >= 1


@pytest.mark.parametrize("args", [["send", "email", "a@example.com", "--adapter", "log"], ["sweep"]])
def test_given_a_persistent_database_and_no_redis_when_sending_or_sweeping_then_it_is_refused_and_nothing_is_written(
    tmp_path, args
):
    assert chimeway("migrate", cwd=tmp_path).returncode == 0
    result = chimeway(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert "CHIMEWAY_REDIS_URL" in result.stderr and "vanishes" in result.stderr
    assert "recorded" not in result.stdout and "re-enqueued" not in result.stdout
    status = json.loads(chimeway("status", "--json", cwd=tmp_path).stdout)
    assert status["table_estimates"]["chimeway_deliveries"] == 0


def test_given_a_custom_adapter_whose_secret_only_the_workers_hold_then_admin_commands_work_and_a_send_names_it(
    tmp_path, redis_url, redis_namespace
):
    site = tmp_path / "site"
    site.mkdir()
    write_pigeon_distribution(site)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "CHIMEWAY_CHANNEL_ADAPTERS": "pigeon=pigeon",
           "CHIMEWAY_REDIS_URL": redis_url, "CHIMEWAY_REDIS_NAMESPACE": redis_namespace}
    for command in (["migrate"], ["status"], ["sweep"], ["reconcile"]):
        result = chimeway(*command, cwd=tmp_path, env=env)
        assert result.returncode == 0, (command, result.stderr)
    sent = chimeway("send", "pigeon", "the-old-mill", "--set", "note=dawn", cwd=tmp_path, env=env)
    assert sent.returncode == 1 and "CHIMEWAY_PIGEON_LOFT" in sent.stderr
    status = json.loads(chimeway("status", "--json", cwd=tmp_path, env=env).stdout)
    assert status["table_estimates"]["chimeway_deliveries"] == 0


def test_given_a_mistyped_variable_then_the_command_refuses_it_and_names_the_setting(tmp_path):
    result = chimeway("status", cwd=tmp_path, env={"CHIMEWAY_MAX_ATTEMPS": "3"})
    assert result.returncode == 1
    assert "CHIMEWAY_MAX_ATTEMPS" in result.stderr and "did you mean CHIMEWAY_MAX_ATTEMPTS?" in result.stderr


def test_given_a_bad_database_url_with_a_password_then_the_error_masks_it(tmp_path):
    result = chimeway("status", cwd=tmp_path, env={"CHIMEWAY_DATABASE_URL": "mysql://app:hunter2-secret@db/app"})
    assert result.returncode == 1 and "CHIMEWAY_DATABASE_URL" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_given_a_named_database_when_running_the_demo_without_a_terminal_then_it_needs_yes(tmp_path):
    named = tmp_path / "app.sqlite3"
    env = {"CHIMEWAY_DATABASE_URL": f"sqlite:///{named}"}
    refused = chimeway("demo", "--count", "20", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    assert str(named) in refused.stderr and "--yes" in refused.stderr
    assert not named.exists() and not (tmp_path / "chimeway.sqlite3").exists()

    accepted = chimeway("demo", "--count", "20", "--yes", "--json", cwd=tmp_path, env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["sent"] == 20 and named.exists()


def test_given_a_demo_that_fails_after_sending_then_it_leaves_no_delivery_for_status_to_call_stalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import io

    from chimeway.ops import demo
    from chimeway.ops.status import collect
    from chimeway.wiring import runtime

    def broken_worker(*args, **kwargs):  # what a missing optional dependency did after "sending 300/300"
        raise ModuleNotFoundError("No module named 'pytest'")

    monkeypatch.setattr(demo, "_drain", broken_worker)
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'chimeway.sqlite3'}")
    monkeypatch.setenv("CHIMEWAY_REDIS_URL", "")
    progress = io.StringIO()
    try:
        with pytest.raises(ModuleNotFoundError):
            demo.run(40, runtime=runtime.configure(**demo.settings()), out=io.StringIO(), progress=progress)
        report = collect(runtime.current())
    finally:
        runtime.reset()
    assert report["open"] == {"pending": 0, "dispatched": 0, "failed": 0}
    assert {"status": "cancelled", "reason": "cancelled_by_user", "count": 40} in report["recent"]["hour"]
    assert "cancelled its 40 unfinished deliveries" in progress.getvalue()


@pytest.mark.parametrize(("answer", "runs"), [("n", False), ("y", True)])
def test_given_a_named_database_when_running_the_demo_on_a_terminal_then_it_asks_first(tmp_path, answer, runs):
    import pty
    import subprocess
    import sys

    named = tmp_path / "app.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["CHIMEWAY_DATABASE_URL"] = f"sqlite:///{named}"
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())  # typed ahead: the demo reads it when it asks
        result = subprocess.run([sys.executable, "-m", "chimeway", "demo", "--count", "20", "--json"], cwd=tmp_path,
                                env=env, stdin=terminal, capture_output=True, text=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    assert "will add about 20 deliveries" in result.stderr and "continue? [y/N]" in result.stderr
    assert (result.returncode == 0) is runs, result.stderr
    assert named.exists() is runs
    if runs:
        assert json.loads(result.stdout)["sent"] == 20  # the question never reaches the JSON on stdout
