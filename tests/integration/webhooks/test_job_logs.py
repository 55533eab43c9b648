"""What the periodic jobs say, read from real processes: ``chimeway scheduler`` logs each tick's
result, and a ``dramatiq chimeway.worker`` running the sweep and reconcile actors logs what they did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis as redis_lib

from chimeway import db
from chimeway.models import Delivery
from chimeway.wiring import runtime as runtime_mod
from tests.harness.stack import wait_until
from tests.harness.workers import Workers

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def settings_env(pg_url: str, redis_url: str, redis_namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update(CHIMEWAY_DATABASE_URL=pg_url, CHIMEWAY_REDIS_URL=redis_url, CHIMEWAY_REDIS_NAMESPACE=redis_namespace,
               CHIMEWAY_DEFAULT_ADAPTER="fake", **extra)
    return env


def test_given_a_worker_when_the_sweep_and_reconcile_actors_run_then_it_logs_what_they_did(
    pg_url, redis_url, redis_namespace, tmp_path: Path, make_delivery, orphan
):
    runtime = runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                    default_adapter="fake", environ={})
    workers = Workers(settings_env(pg_url, redis_url, redis_namespace), tmp_path)
    try:
        lost = Delivery.create(notification_id=str(uuid.uuid4()), channel="email", recipient="ann@example.com", adapter="fake",
                               updated_at=db.now() - timedelta(hours=1))
        for number in range(4):  # four orphans, three of whose deliveries have committed since
            orphan("mailgun", f"mg-{number}")
        for number in range(3):
            make_delivery("mailgun", f"mg-{number}")
        _, log = workers.start()
        runtime.actors["sweep_actor"].send()
        runtime.actors["reconcile_orphans"].send()
        wait_until(lambda: "reconcile: linked" in log.read_text() and "sweep: re-enqueued" in log.read_text(),
                   60, what="the job logs")
        wait_until(lambda: Delivery.get_by_id(lost.id).status == "succeeded", 60, what="the swept delivery")
    finally:
        workers.stop_all()
        runtime_mod.reset()
    text = log.read_text()
    assert "INFO" in text and "sweep: re-enqueued 1 (pending 1, failed 0, dispatched 0, deferred 0)" in text
    assert "reconcile: linked 3 of 4 orphans" in text
    assert "ann@example.com" not in text


def test_given_two_schedulers_then_each_tick_is_logged_as_fired_or_already_fired_by_the_other(
    pg_url, redis_url, redis_namespace, tmp_path: Path
):
    # The other scheduler is played by claims written ahead: every even second's sweep tick is taken.
    client = redis_lib.Redis.from_url(redis_url)
    start = int(time.time())
    try:
        for second in range(start, start + 600):
            if second % 2 == 0:
                client.set(f"{redis_namespace}:scheduler:sweep:{second}", "1", ex=900)
    finally:
        client.close()
    log = tmp_path / "scheduler.log"
    env = settings_env(pg_url, redis_url, redis_namespace, CHIMEWAY_SWEEP_CRON="* * * * * *")
    with open(log, "wb") as out:
        scheduler = subprocess.Popen([sys.executable, "-m", "chimeway", "scheduler"], cwd=tmp_path, env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "sweep tick" in log.read_text() and " fired" in log.read_text().replace("already fired", "")
                   and "already fired by another scheduler" in log.read_text(), 60, what="both kinds of tick")
    finally:
        scheduler.terminate()
        scheduler.wait(30)
    lines = [line for line in log.read_text().splitlines() if "sweep tick" in line]
    already = [line for line in lines if line.endswith("already fired by another scheduler")]
    fired = [line for line in lines if line.endswith(" fired") and line not in already]
    assert already and fired
    assert all("INFO chimeway.scheduler: scheduler: sweep tick" in line for line in lines)
