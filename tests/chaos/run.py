"""``python -m tests.chaos``: Chimeway under faults, then the invariants — one JSON line, exit 1 on a violation.

The run, on private servers (never the shared ones):

1. two ``dramatiq chimeway.worker`` processes, a ``chimeway scheduler`` and the WSGI webhook app;
2. a sender thread sends the planned deliveries through ``chimeway.send`` at a steady pace — some
   inside transactions that roll back, and for 30 % of the webhook targets the signed event is
   POSTed while the delivery's transaction is still open;
3. meanwhile the fault injector SIGKILLs random worker process groups (the supervisor restarts
   them), restarts Redis once (every queued message is lost) and PostgreSQL once; duplicate
   messages go straight to the broker for 10 % of the deliveries, past the enqueue dedupe;
4. late, replayed and forged webhook events are POSTed by a provider-like poster that retries 5xx;
5. quiescence: the sweep and the reconciler run (the scheduler's own ticks, plus a tick from here
   every two seconds) until every committed delivery is terminal, every linkable orphan is linked
   and the broker is empty — or the deadline passes;
6. the invariants (:mod:`tests.chaos.checks`).

``--small`` is the configuration ``make test`` runs (a few hundred deliveries, a few faults).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tests.chaos import checks
from tests.chaos.webhook_poster import Poster
from tests.chaos.workload import EVENT_TYPES, Planned, Workload, plan
from tests.harness import webhooks
from tests.harness.processes import Supervisor
from tests.harness.progress import say
from tests.harness.servers import PrivatePostgres, PrivateRedis, free_port, private_servers, wait_for_port
from tests.harness.stack import REPO, chimeway_env, dramatiq_argv, scheduler_argv, wsgi_server_argv


@dataclass
class ChaosConfig:
    deliveries: int = 2000
    send_seconds: float = 120.0  #: the sends are spread over this long
    kills: int = 20
    redis_restarts: int = 1
    pg_restarts: int = 1
    pg_downtime_seconds: float = 1.0  #: how long PostgreSQL stays down in each restart
    duplicate_fraction: float = 0.10
    rollback_fraction: float = 0.05
    webhooks: int = 500
    webhook_early: float = 0.30
    webhook_replay: float = 0.10
    webhook_forged: float = 0.05
    workers: int = 2
    threads: int = 8
    seed: int = 6
    deadline_seconds: float = 900.0  #: the whole run, servers included
    quiesce_seconds: float = 300.0
    # worker settings, short so recovery happens within the run
    lease_seconds: int = 6
    sweep_stall_seconds: int = 4
    backoff_min_ms: int = 100
    backoff_max_ms: int = 1500
    reconcile_grace_seconds: int = 2
    broker_heartbeat_ms: int = 3000
    broker_maintenance_chance: int = 50_000
    sweep_cron: str = "* * * * *"
    reconcile_cron: str = "* * * * *"
    #: CHAOS_PRUNE_CRON: the scheduler's prune (raw webhooks and history past retention) under load;
    #: every minute by default, so its chunked, horizon-guarded deletes run beside the workers.
    prune_cron: str = "* * * * *"
    #: CHIMEWAY_RATE_LIMITS and CHIMEWAY_FAILOVER for the workers (e.g. ``fake=400/1`` and ``fake=log``);
    #: empty: unset. A failover to ``log`` makes some scripted exhaustions succeed (reported as
    #: unexpected outcomes, not invariants) and its calls are not in the fake adapter's call log.
    rate_limits: str = ""
    failover: str = ""
    #: the workload's scripted failures are each delivery's own, not a provider's outage: a circuit
    #: opening on them (default 20 in a row) would only slow the run down
    circuit_failures: int = 100_000


SMALL = {"deliveries": 300, "send_seconds": 25.0, "kills": 4, "webhooks": 60, "deadline_seconds": 115.0,
         "quiesce_seconds": 60.0}


def worker_settings(cfg: ChaosConfig) -> dict[str, Any]:
    names = ("lease_seconds", "sweep_stall_seconds", "backoff_min_ms", "backoff_max_ms", "reconcile_grace_seconds",
             "broker_heartbeat_ms", "broker_maintenance_chance", "sweep_cron", "reconcile_cron", "prune_cron",
             "circuit_failures")
    settings = {name: getattr(cfg, name) for name in names}
    settings.update({name: getattr(cfg, name) for name in ("rate_limits", "failover") if getattr(cfg, name)})
    settings["mailgun_webhook_signing_key"] = webhooks.SIGNING_KEY
    return settings


class CallLogClock:
    """Samples how many lines the call log has, so a moment maps to a line number (the log has no times)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.lines = 0
        self.offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-log-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        self.samples.append((time.monotonic(), self.lines))
        return self.lines

    def line_at(self, moment: float) -> int:
        index = bisect.bisect_right([t for t, _ in self.samples], moment) - 1
        return self.samples[max(0, index)][1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


class Rollback(Exception):
    """Raised inside a send's transaction to roll it back."""


class Chaos:
    def __init__(self, cfg: ChaosConfig, root: Path, sup: Supervisor, pg: PrivatePostgres, rd: PrivateRedis,
                 database_url: str) -> None:
        self.cfg = cfg
        self.root = root
        self.sup = sup
        self.pg = pg
        self.rd = rd
        self.database_url = database_url
        self.rng = random.Random(cfg.seed + 1)
        self.call_log = root / "calls.jsonl"
        self.workload: Workload = plan(
            cfg.deliveries, cfg.webhooks, rollback=cfg.rollback_fraction, duplicates=cfg.duplicate_fraction,
            early=cfg.webhook_early, replay=cfg.webhook_replay, forged=cfg.webhook_forged, seed=cfg.seed,
        )
        self.facts = checks.Facts(committed={}, rolled_back=set(), forged_tokens=set())
        self.faults: dict[str, Any] = {"kills": 0, "kills_requested": cfg.kills, "redis_restarts": 0,
                                       "pg_restarts": 0, "duplicates_injected": 0, "duplicates_failed": 0}
        self.webhook_stats = {"early_answered_before_commit": 0, "early_posted_after_commit": 0}
        self.send_errors = 0
        self.sending_done = threading.Event()
        self.pending_windows: list[tuple[float, float]] = []  #: PostgreSQL restarts, monotonic
        self.pg_restarted_at: list[float] = []
        self.lock = threading.Lock()

    # --- processes --------------------------------------------------------------------------------

    def start_processes(self) -> None:
        env = chimeway_env(self.database_url, self.rd.url(), **worker_settings(self.cfg))
        env["CHIMEWAY_FAKE_CALL_LOG"] = str(self.call_log)
        for i in range(self.cfg.workers):
            self.sup.add(f"worker-{i + 1}", dramatiq_argv("chimeway.worker", 1, self.cfg.threads), env)
        self.sup.add("scheduler", scheduler_argv(), env)
        self.webhook_port = free_port()
        server, argv = wsgi_server_argv(self.webhook_port, workers=1, threads=4)
        self.sup.add("webhooks", argv, env)
        self.sup.start_all()
        wait_for_port(self.webhook_port, 30)
        say(f"started {self.cfg.workers} workers x {self.cfg.threads} threads, scheduler, webhooks ({server})")

    def configure_here(self) -> None:
        import chimeway

        # Chimeway's own log lines in this process (a failed enqueue while Redis restarts…) go to a
        # file of the run: stderr is for progress.
        handler = logging.FileHandler(self.root / "harness.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)

        self.runtime = chimeway.configure(database_url=self.database_url, redis_url=self.rd.url(), environ={},
                                          **worker_settings(self.cfg))

    # --- the sender -------------------------------------------------------------------------------

    def event_for(self, p: Planned) -> webhooks.SignedEvent:
        return webhooks.mailgun_event(p.tag, self.rng.choice(EVENT_TYPES))

    def send_all(self, poster: Poster) -> None:
        import chimeway

        started = time.monotonic()
        interval = self.cfg.send_seconds / max(1, len(self.workload.deliveries))
        for index, p in enumerate(self.workload.deliveries):
            pause = started + index * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            event = self.event_for(p) if p.webhook else None
            for attempt in range(60):  # an application retries a send that failed (PostgreSQL restarting)
                try:
                    self.send_one(chimeway, p, event, poster)
                    break
                except Exception as err:
                    self.send_errors += 1
                    if attempt % 10 == 0:
                        say(f"send failed ({type(err).__name__}: {str(err).strip()[:100]}); retrying")
                    # What a web application does at the end of a failed request: give the
                    # connection back, so the pool replaces a dead one (PostgreSQL restarted).
                    with contextlib.suppress(Exception):
                        chimeway.database.close()
                    time.sleep(0.5)
            if index and index % 250 == 0:
                say(f"sent {index}/{len(self.workload.deliveries)}; faults so far {self.faults}")
        self.sending_done.set()

    def send_one(self, chimeway: Any, p: Planned, event: webhooks.SignedEvent | None, poster: Poster) -> None:
        early_done = False
        delivery = None
        try:
            with chimeway.database.atomic():
                delivery = chimeway.send("email", f"{p.tag}@harness.test", p.payload, adapter="fake",
                                         idempotency_key=None if p.rollback else p.tag)
                if event is not None and p.webhook == "early":
                    # The row exists but is not committed: the event must become an orphan.
                    status = poster.post(event)
                    early_done = status is not None and status < 500
                    if early_done:
                        self.webhook_stats["early_answered_before_commit"] += 1
                if p.rollback:
                    raise Rollback
        except Rollback:
            self.facts.rolled_back.add(str(delivery.id))  # type: ignore[union-attr]
        if p.rollback:
            if event is not None and not early_done:
                poster.post_later(self.rng.uniform(0, 10), event, "rolled_back")
            return
        delivery_id = str(delivery.id)  # type: ignore[union-attr]
        self.facts.committed[p.tag] = delivery_id
        self.facts.expected[delivery_id] = p.expected
        if event is not None:
            if p.webhook == "late" or not early_done:
                if p.webhook == "early":
                    self.webhook_stats["early_posted_after_commit"] += 1
                poster.post_later(self.rng.uniform(0, 15), event, p.webhook or "late")
            if p.replay:
                poster.post_later(self.rng.uniform(5, 25), event, "replay")
        if p.duplicate:
            poster.at(self.rng.uniform(0, 8), lambda job, d=delivery_id: self.inject_duplicate(d))

    def inject_duplicate(self, delivery_id: str) -> bool:
        """A second message for the delivery, straight to the broker (past the enqueue helper's dedupe)."""
        try:
            self.runtime.actors["deliver"].send(delivery_id)
        except Exception:
            with self.lock:
                self.faults["duplicates_failed"] += 1
            return False
        with self.lock:
            self.faults["duplicates_injected"] += 1
        return True

    def schedule_forged(self, poster: Poster) -> None:
        for tag in self.workload.forged:
            event = webhooks.mailgun_event(tag, self.rng.choice(EVENT_TYPES), forged=True)
            self.facts.forged_tokens.add(event.token)
            poster.post_later(self.rng.uniform(1, self.cfg.send_seconds), event, "forged")

    # --- faults -----------------------------------------------------------------------------------

    def fault_plan(self) -> list[tuple[float, str]]:
        span = self.cfg.send_seconds + 10
        actions = [(self.rng.uniform(2, span), "kill") for _ in range(self.cfg.kills)]
        actions += [(span * (0.35 + 0.1 * i), "redis") for i in range(self.cfg.redis_restarts)]
        actions += [(span * (0.6 + 0.1 * i), "pg") for i in range(self.cfg.pg_restarts)]
        return sorted(actions)

    def inject_faults(self) -> None:
        started = time.monotonic()
        for at, action in self.fault_plan():
            pause = started + at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if action == "kill":
                    self.kill_a_worker()
                elif action == "redis":
                    say("fault: Redis restart (every queued message lost)")
                    self.rd.restart(downtime=1.0)
                    self.faults["redis_restarts"] += 1
                elif action == "pg":
                    say("fault: PostgreSQL restart")
                    max_sleep = 1.6
                    self.pg_restarted_at.append(time.monotonic())
                    began = time.monotonic() - max_sleep - 0.5
                    self.pg.restart(downtime=self.cfg.pg_downtime_seconds, mode="fast")
                    ended = time.monotonic() + 1.0
                    self.faults["pg_restarts"] += 1
                    self.pending_windows.append((began, ended))
            except Exception as err:
                say(f"fault {action} failed: {type(err).__name__}: {err}")

    def kill_a_worker(self) -> None:
        names = [n for n, p in self.sup.processes.items() if n.startswith("worker-")]
        alive = [n for n in names if self.sup.processes[n].alive()]
        if not alive:
            time.sleep(2)
            alive = [n for n in names if self.sup.processes[n].alive()]
        if not alive:
            say("fault: no worker alive to kill")
            return
        name = self.rng.choice(alive)
        pids = self.sup.kill(name)
        self.facts.kills.append(set(pids))
        self.faults["kills"] += 1
        say(f"fault: SIGKILL {name} ({len(pids)} processes); kill {self.faults['kills']}/{self.cfg.kills}")

    # --- quiescence -------------------------------------------------------------------------------

    def outstanding_messages(self) -> int:
        client = self.rd.client()
        try:
            total = 0
            for key in client.scan_iter(match="*.msgs", count=1000):
                if not key.endswith(b".XQ.msgs"):
                    total += int(client.hlen(key))
            return total
        finally:
            client.close()

    def probe(self) -> dict[str, int]:
        conn = self.pg.connect(self.database_url.rsplit("/", 1)[1])
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM chimeway_deliveries WHERE status NOT IN %s", (checks.TERMINAL,))
            open_rows = cur.fetchone()[0]
            cur.execute(
                "SELECT count(*) FROM chimeway_events o JOIN chimeway_deliveries d ON d.tenant_id = o.tenant_id "
                "AND d.provider = o.provider AND d.provider_message_id = o.provider_message_id "
                "WHERE o.needs_reconciliation AND NOT EXISTS (SELECT 1 FROM chimeway_events r "
                "WHERE r.type = 'reconciled' AND r.idempotency_key = 'reconciled:' || o.id::text)"
            )
            unlinked = cur.fetchone()[0]
        finally:
            conn.close()
        return {"open": open_rows, "unlinked": unlinked, "messages": self.outstanding_messages()}

    def quiesce(self, poster: Poster, deadline: float) -> dict[str, Any]:
        """Sweep and reconcile every two seconds until nothing is open, unlinked, queued or unposted."""
        import chimeway

        started = time.monotonic()
        stop_at = min(deadline, started + self.cfg.quiesce_seconds)
        quiet_probes = 0
        ticks = 0
        state: dict[str, int] = {}
        while time.monotonic() < stop_at:
            for step in (chimeway.sweep, chimeway.reconcile):
                try:
                    step()
                except Exception as err:
                    say(f"{step.__name__} failed: {type(err).__name__}: {str(err).strip()[:200]}")
                    with contextlib.suppress(Exception):
                        chimeway.database.close()
            ticks += 1
            try:
                state = {**self.probe(), "webhooks_unposted": poster.pending()}
            except Exception as err:
                state = {"probe_failed": 1}
                say(f"probe failed: {type(err).__name__}: {err}")
            if not any(state.values()):
                quiet_probes += 1
                if quiet_probes >= 2:
                    break
            else:
                quiet_probes = 0
                if ticks % 5 == 1:
                    say(f"quiescing: {state}")
            time.sleep(2)
        return {"seconds": round(time.monotonic() - started, 1), "ticks": ticks, "reached": quiet_probes >= 2,
                "last_state": state}

    # --- the whole run ----------------------------------------------------------------------------

    def run(self, deadline: float) -> dict[str, Any]:
        self.start_processes()
        self.configure_here()
        clock = CallLogClock(self.call_log)
        poster = Poster(self.webhook_port)
        faults = threading.Thread(target=self.inject_faults, name="faults", daemon=True)
        sender = threading.Thread(target=self.send_all, args=(poster,), name="sender", daemon=True)
        self.schedule_forged(poster)
        faults.start()
        sender.start()
        sender.join(timeout=max(0.0, deadline - time.monotonic()))
        faults.join(timeout=max(0.0, deadline - time.monotonic()))
        say(f"sending done ({len(self.facts.committed)} committed, {len(self.facts.rolled_back)} rolled back); "
            f"faults {self.faults}")
        quiescence = self.quiesce(poster, deadline - 30)
        say(f"quiescence: {quiescence}")
        poster.stop()
        clock.stop()
        self.sup.stop_all(timeout=10)
        self.facts.pg_windows = [(clock.line_at(a), clock.line_at(b)) for a, b in self.pending_windows]
        conn = self.pg.connect(self.database_url.rsplit("/", 1)[1])
        client = self.rd.client()
        try:
            result = checks.evaluate(conn, checks.read_calls(self.call_log), self.facts, client)
        finally:
            conn.close()
            client.close()
        result["quiescence"] = quiescence
        result["webhooks"] = {**self.webhook_stats, **poster.snapshot()}
        # Genuine events the provider-like poster never got a 2xx/4xx for (it gave up on 5xx, or ran out of time).
        result["webhooks"]["never_accepted"] = result["webhooks"]["final"].get("gave_up", 0) + poster.pending()
        # How long the webhook app kept failing after each PostgreSQL restart began (5xx or no answer).
        result["webhooks"]["failing_seconds_after_pg_restart"] = [
            round(max((t for t in poster.failures_at if t >= began), default=began) - began, 1)
            for began in self.pg_restarted_at
        ]
        result["send_errors_retried"] = self.send_errors
        result["unexpected_process_exits"] = self.sup.unexpected_exits
        return result


def parse_config(argv: list[str] | None) -> ChaosConfig:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the configuration make test runs")
    for f in fields(ChaosConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=None)
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(SMALL) if args.small or os.environ.get("CHAOS_SMALL") else {}
    for f in fields(ChaosConfig):
        raw = getattr(args, f.name)
        if raw is None and os.environ.get(f"CHAOS_{f.name.upper()}"):
            raw = type(f.default)(os.environ[f"CHAOS_{f.name.upper()}"])
        if raw is not None:
            values[f.name] = raw
    return ChaosConfig(**values)


class DeadlineExceeded(Exception):
    pass


def passed(output: dict[str, Any]) -> bool:
    invariants = output.get("invariants", {})
    return bool(invariants) and not any(invariants.values()) and "error" not in output


def keep_evidence(root: Path) -> Path:
    """Copy a failed run's process logs and call log out of the temporary root before it is removed:
    a failure that happens once in many runs must leave something to read (``CHAOS_KEEP_DIR``)."""
    kept = Path(os.environ.get("CHAOS_KEEP_DIR") or Path(REPO) / "chaos-failures") / time.strftime("%Y%m%d-%H%M%S")
    kept.mkdir(parents=True, exist_ok=True)
    for path in root.iterdir():
        if path.is_file() and path.suffix in (".log", ".jsonl"):
            shutil.copy2(path, kept / path.name)
    with contextlib.suppress(OSError):
        shutil.copy2(root / "pg" / "server.log", kept / "postgresql.log")
    say(f"evidence of the failed run kept in {kept}")
    return kept


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    started = time.monotonic()
    deadline = started + cfg.deadline_seconds

    def on_alarm(*_: Any) -> None:
        raise DeadlineExceeded(f"the run exceeded {cfg.deadline_seconds:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(int(cfg.deadline_seconds) + 5)
    say(f"chaos: {asdict(cfg)}")
    output: dict[str, Any] = {"chaos": "chimeway"}
    try:
        with private_servers("chimeway-chaos-") as (root, reaper, pg, rd):
            url = pg.create_database("chaos")
            from chimeway.db import connect
            from chimeway.store.migrator import migrate
            from chimeway.wiring.config import load_settings

            database = connect(load_settings(environ={}, database_url=url))
            migrate(database)
            database.close_all()
            sup = Supervisor(root, reaper, REPO, restart_delay=0.5)
            chaos = Chaos(cfg, root, sup, pg, rd, url)
            output["workload"] = chaos.workload.counts()
            try:
                output.update(chaos.run(deadline))
            finally:
                sup.stop_all(timeout=5)
                output["faults"] = chaos.faults
                if not passed(output):
                    output["kept"] = str(keep_evidence(root))
    except Exception as err:
        output["error"] = f"{type(err).__name__}: {err}"
        say(traceback.format_exc())
    finally:
        signal.alarm(0)
    output["violations"] = {name: value for name, value in output.get("invariants", {}).items() if value}
    output["ok"] = passed(output)
    output["duration_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(output, sort_keys=True, default=str))
    return 0 if output["ok"] else 1
