"""``chimeway demo``: the whole life of a few hundred notifications, on whatever is configured.

On the embedded default (a SQLite file in the working directory, the in-memory broker and an
in-process worker) it needs no server; with CHIMEWAY_DATABASE_URL / CHIMEWAY_REDIS_URL set it runs
the same story on PostgreSQL and Redis. The story: migrate → send deliveries through the ``fake``
adapter with a realistic outcome mix → some provider webhooks arrive *before* their delivery exists
(orphans) → a worker drains the queue, retrying and exhausting → the rest of the webhooks arrive
(signed like Mailgun signs them, a few replayed) → reconcile links the orphans → a summary.

Retries use a millisecond backoff and orphans no grace window, so the story fits in seconds; the
demo changes nothing else. Each run tags its messages, so it can run again on the same database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from chimeway import db
from chimeway.states import TERMINAL
from chimeway.wiring.runtime_type import Runtime

#: The Mailgun signing key the demo uses when CHIMEWAY_MAILGUN_WEBHOOK_SIGNING_KEY is unset.
DEMO_SIGNING_KEY = "chimeway-demo-signing-key"
PROVIDER = "mailgun"

#: (share, label, fake_outcomes script, max_attempts) — the outcome mix of the demo's deliveries.
MIX: list[tuple[float, str, list[str], int | None]] = [
    (0.70, "succeeds", ["ok"], None),
    (0.12, "retries, then succeeds", ["temporary", "temporary", "ok"], None),
    (0.05, "exhausts its retries", ["temporary"], 3),
    (0.06, "fails permanently", ["permanent"], None),
    (0.07, "bounces", ["bounced"], None),
]


@dataclass
class Planned:
    index: int
    label: str
    script: list[str]
    max_attempts: int | None
    message_id: str  # the provider message id the fake adapter will report
    delivery_id: str | None = None


@dataclass
class DemoReport:
    sent: int = 0
    drain_seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    attempts: int = 0
    webhooks: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    early_events: int = 0
    linked: int = 0
    suppressions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "drain_seconds": round(self.drain_seconds, 3),
            "throughput_per_second": round(self.sent / self.drain_seconds, 1) if self.drain_seconds else None,
            "deliveries": {f"{s}/{r}" if r else s: n for (s, r), n in sorted(self.statuses.items())},
            "attempts": self.attempts,
            "webhooks": dict(self.webhooks),
            "events": dict(sorted(self.events.items())),
            "orphans_before_commit": self.early_events,
            "orphans_linked": self.linked,
            "suppressions_added": self.suppressions,
        }


def plan(count: int, run_tag: str, rng: random.Random) -> list[Planned]:
    """``count`` deliveries in the MIX proportions, plus exactly one unclassifiable outcome."""
    planned: list[Planned] = []
    for share, label, script, max_attempts in MIX:
        planned += [Planned(0, label, script, max_attempts, "") for _ in range(round(count * share))]
    planned = planned[: count - 1]
    while len(planned) < count - 1:
        planned.append(Planned(0, MIX[0][1], MIX[0][2], None, ""))
    planned.append(Planned(0, "returns garbage (unclassified)", ["garbage"], 2, ""))
    rng.shuffle(planned)
    for index, item in enumerate(planned):
        item.index = index
        item.message_id = f"<demo-{run_tag}-{index}@chimeway.ops.demo>"
    return planned


def recipient(item: Planned, run_tag: str) -> str:
    return f"user{item.index}-{run_tag}@example.com"


def mailgun_body(signing_key: str, message_id: str, event: str, **extra: Any) -> bytes:
    """One webhook body signed exactly as Mailgun signs it (HMAC-SHA256 over timestamp + token)."""
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    event_data = {
        "id": uuid.uuid4().hex,
        "event": event,
        "timestamp": time.time(),
        "message": {"headers": {"message-id": message_id.strip("<>")}},
        **extra,
    }
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event_data}).encode()


class Progress:
    """A one-line progress bar on a terminal (plain periodic lines when not a terminal)."""

    def __init__(self, label: str, total: int, stream: TextIO) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.tty = stream.isatty()
        self._last = -1

    def update(self, done: int) -> None:
        percent = int(100 * done / self.total) if self.total else 100
        if self.tty:
            filled = percent * 30 // 100
            self.stream.write(f"\r{self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            self.stream.flush()
        elif percent // 25 != self._last // 25 or done == self.total:
            self.stream.write(f"{self.label:<28} {done}/{self.total}\n")
        self._last = percent

    def finish(self) -> None:
        if self._last != 100:
            self.update(self.total)
        if self.tty:
            self.stream.write("\n")


def settings() -> dict[str, Any]:
    """What the demo configures Chimeway with, on top of the environment: ``configure(**settings())``."""
    from chimeway.wiring.config import load_settings

    base = load_settings()
    return dict(
        backoff_min_ms=5,
        backoff_max_ms=50,
        # The fake adapter's scripted failures are each delivery's own, not an outage of a provider:
        # a circuit opening on them would only stall the demo.
        circuit_failures=base.circuit_failures if "CHIMEWAY_CIRCUIT_FAILURES" in os.environ else 100_000,
        reconcile_grace_seconds=0,
        mailgun_webhook_signing_key=base.mailgun_webhook_signing_key or DEMO_SIGNING_KEY,
    )


def run(
    count: int = 300, *, runtime: Runtime, out: TextIO = sys.stdout, progress: TextIO = sys.stderr,
    seed: int | None = None,
) -> DemoReport:
    """The demo on ``runtime``, configured with :func:`settings`."""
    from chimeway.dispatch.send import send
    from chimeway.store.migrator import migrate
    from chimeway.webhooks import handle, reconcile

    key = runtime.settings.mailgun_webhook_signing_key
    migrate(runtime.database)
    rng = random.Random(seed)
    run_tag = uuid.uuid4().hex[:8]
    planned = plan(count, run_tag, rng)
    report = DemoReport()
    headers = {"Content-Type": "application/json"}

    def webhook(item: Planned, event: str, **extra: Any) -> int:
        status, _ = handle(PROVIDER, headers, mailgun_body(key, item.message_id, event, **extra), runtime=runtime)
        report.webhooks[f"{status}"] += 1
        return status

    succeeding = [p for p in planned if p.script[-1] == "ok"]
    early = rng.sample(succeeding, k=max(1, len(succeeding) // 10))
    for item in early:  # the provider is faster than our commit: these land as orphans
        webhook(item, "delivered")
    report.early_events = len(early)

    written: list[str] = []  # every delivery this run recorded, for the clean-up of a failed run
    try:
        bar = Progress("sending", len(planned), progress)
        started = time.perf_counter()
        for item in planned:
            delivery = send(
                "email",
                recipient(item, run_tag),
                {"subject": "Your order shipped", "fake_outcomes": item.script, "fake_provider": PROVIDER,
                 "fake_provider_message_id": item.message_id},
                adapter="fake",
                max_attempts=item.max_attempts,
                metadata={"demo_run": run_tag},
                runtime=runtime,
            )
            item.delivery_id = delivery.id
            written.append(delivery.id)
            report.sent += 1
            bar.update(report.sent)
        bar.finish()

        ids = [p.delivery_id for p in planned]
        _drain(runtime, ids, Progress("delivering", len(ids), progress))
        report.drain_seconds = time.perf_counter() - started

        for item in planned:
            if item not in early and item.script[-1] == "ok":
                webhook(item, "delivered")
                if item.index % 4 == 0:
                    webhook(item, "opened")
        late = [p for p in planned if p.script[-1] == "ok" and p not in early]
        for item in late[:3]:  # accepted, then bounced by the receiving server: a hard bounce suppresses
            webhook(item, "failed", severity="permanent", reason="bounce")
        replayed = mailgun_body(key, planned[0].message_id, "clicked")
        for _ in range(2):  # a provider retrying the same request: stored once
            status, _ = handle(PROVIDER, headers, replayed, runtime=runtime)
            report.webhooks[f"{status}"] += 1

        # The address that hard-bounced is now suppressed: the next send to it never reaches the adapter.
        follow_up = send("email", recipient(late[0], run_tag), {"subject": "Are you there?"}, adapter="fake",
                         runtime=runtime)
        written.append(follow_up.id)
        _drain(runtime, [follow_up.id], None)
        ids.append(follow_up.id)
    except BaseException:
        # A failed run must not leave its deliveries behind looking stalled to `chimeway status`.
        _cancel_unfinished(written, progress)
        raise
    result = reconcile(runtime=runtime)
    report.linked = result.linked
    _collect(report, ids)
    _print_summary(report, planned, out)
    return report


def _drain(runtime: Runtime, ids: list[str], bar: Progress | None) -> None:
    """Run an in-process worker until every delivery of this run is terminal."""
    from chimeway.dispatch.broker import start_worker

    terminal = tuple(s.value for s in TERMINAL)
    deadline = time.monotonic() + 120
    with start_worker(runtime, threads=8):
        while True:
            done = _count_terminal(ids, terminal)
            if bar:
                bar.update(done)
            if done == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    if bar:
        bar.finish()


def _cancel_unfinished(ids: list[str], progress: TextIO) -> None:
    """Cancel (through the public API) every delivery of a failed run that is not terminal yet."""
    from chimeway.store.deliveries import cancel

    cancelled = sum(1 for delivery_id in ids if cancel(delivery_id))
    if cancelled:
        progress.write(f"demo failed: cancelled its {cancelled} unfinished deliveries\n")


def _count_terminal(ids: list[str], terminal: tuple[str, ...]) -> int:
    from chimeway.models import Delivery

    total = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        total += Delivery.select().where(Delivery.id.in_(chunk), Delivery.status.in_(terminal)).count()
    return total


def _collect(report: DemoReport, ids: list[str]) -> None:
    from chimeway.models import Attempt, Delivery, Event, Suppression

    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in Delivery.select(Delivery.status, Delivery.reason).where(Delivery.id.in_(chunk)):
            report.statuses[(row.status, row.reason)] += 1
        report.attempts += Attempt.select().where(Attempt.delivery_id.in_(chunk)).count()
        for row in Event.select(Event.type).where(Event.delivery_id.in_(chunk)):
            report.events[row.type] += 1
        recipients = [r.recipient for r in Delivery.select(Delivery.recipient).where(Delivery.id.in_(chunk))]
        report.suppressions += Suppression.select().where(Suppression.address.in_(recipients)).count()


def _print_summary(report: DemoReport, planned: list[Planned], out: TextIO) -> None:
    data = report.as_dict()
    mix = Counter(p.label for p in planned)
    lines = ["", "Chimeway demo — summary", "", f"{'outcome script':<34} {'deliveries':>10}"]
    lines += [f"{label:<34} {n:>10}" for label, n in mix.most_common()]
    lines += [f"{'sent to a hard-bounced address':<34} {1:>10}"]
    lines += ["", f"{'status / reason':<34} {'deliveries':>10}"]
    lines += [f"{name:<34} {n:>10}" for name, n in data["deliveries"].items()]
    lines += ["", f"{'ledger event':<34} {'rows':>10}"]
    lines += [f"{name:<34} {n:>10}" for name, n in data["events"].items()]
    lines += [
        "",
        f"attempts recorded                  {report.attempts:>10}",
        f"webhooks answered (status: count)  {', '.join(f'{k}: {v}' for k, v in sorted(report.webhooks.items())):>10}",
        f"orphans (event before commit)      {report.early_events:>10}",
        f"orphans linked by reconcile        {report.linked:>10}",
        f"suppressions from hard bounces     {report.suppressions:>10}",
        f"send → all terminal                {report.drain_seconds:>9.2f}s",
        f"throughput                         {data['throughput_per_second'] or 0:>8.1f}/s",
        f"database                           {'postgresql' if db.is_postgres() else 'sqlite':>10}",
    ]
    out.write("\n".join(lines) + "\n")
