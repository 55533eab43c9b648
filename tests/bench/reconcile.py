"""Reconcile: link a backlog of orphans among a large ledger, then time an idle tick.

The ledger is built in SQL: ``orphans`` succeeded deliveries with provider message ids, the rest of
the events linked to them already (received an hour ago), and one orphan per delivery received ten
minutes ago (past the grace window, within max age). ``chimeway.reconcile()`` then runs tick after
tick, as the scheduler would run it, until a tick links nothing; the backlog time is the sum of those
ticks. The idle tick is one more call on the same ledger with no orphan left to link.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench.env import BenchEnv
from tests.bench.profile import reset_statements, top_statements
from tests.harness import webhooks
from tests.harness.progress import say


def build_ledger(conn: Any, events: int, orphans: int) -> None:
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, "
        "attempt_count, provider, provider_message_id) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'bench-' || g || '@example.test', 'fake', "
        "'succeeded', 1, %s, '<rec-' || g || '@harness.test>' FROM generate_series(0, %s - 1) AS g",
        (webhooks.PROVIDER, orphans),
    )
    cur.execute(
        "CREATE TEMP TABLE bench_targets AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, "
        "provider_message_id FROM chimeway_deliveries"
    )
    linked = max(0, events - orphans)
    cur.execute(
        "INSERT INTO chimeway_events (id, delivery_id, type, provider, provider_message_id, provider_event_id, "
        "occurred_at, received_at, needs_reconciliation, idempotency_key) "
        "SELECT gen_random_uuid(), t.id, (ARRAY['sent', 'opened', 'clicked'])[1 + g %% 3], %s, "
        "t.provider_message_id, 'linked-' || g, now() - interval '1 hour', now() - interval '1 hour', false, "
        "%s || ':linked-' || g || ':0' "
        "FROM generate_series(0, %s - 1) AS g JOIN bench_targets t ON t.n = g %% %s",
        (webhooks.PROVIDER, webhooks.PROVIDER, linked, orphans),
    )
    cur.execute(
        "INSERT INTO chimeway_events (id, delivery_id, type, provider, provider_message_id, provider_event_id, "
        "occurred_at, received_at, needs_reconciliation, idempotency_key) "
        "SELECT gen_random_uuid(), NULL, 'delivered', %s, t.provider_message_id, 'orphan-' || t.n, "
        "now() - interval '10 minutes', now() - interval '10 minutes', true, %s || ':orphan-' || t.n || ':0' "
        "FROM bench_targets t",
        (webhooks.PROVIDER, webhooks.PROVIDER),
    )
    cur.execute("DROP TABLE bench_targets")
    cur.execute("ANALYZE")


def reconcile_once(env: BenchEnv, events: int, orphans: int, label: str, statements: bool = False) -> dict[str, Any]:
    import chimeway
    from chimeway.wiring.runtime import reset

    url = env.fresh_database(label)
    conn = env.pg.connect(label)
    try:
        build_ledger(conn, events, orphans)
        chimeway.configure(database_url=url, redis_url=env.rd.url(), environ={})
        ticks, linked, scanned = 0, 0, 0
        sessions = reset_statements(env) if statements else -1
        started = time.monotonic()
        while True:
            result = chimeway.reconcile()
            ticks += 1
            linked += result.linked
            scanned += result.scanned
            if result.linked == 0 or time.monotonic() - started > env.cfg.drain_timeout:
                break
        seconds = time.monotonic() - started
        sql = top_statements(env, max(1, linked), sessions) if statements and sessions >= 0 else None
        idle = []
        for _ in range(5):
            tick = time.monotonic()
            chimeway.reconcile()
            idle.append((time.monotonic() - tick) * 1000)
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM chimeway_events WHERE type = 'reconciled'")
        reconciled = cur.fetchone()[0]
    finally:
        reset()
        conn.close()
        env.drop_database(label)
    result_row = {
        "events": events, "orphans": orphans, "linked": linked, "scanned": scanned, "reconciled_events": reconciled,
        "ticks": ticks, "seconds": round(seconds, 3), "orphans_per_second": round(linked / seconds, 1),
        "idle_tick_ms": round(min(idle), 2),
    }
    if sql is not None:  # "per_delivery" reads "per orphan linked" here
        result_row["sql"] = sql
    say(f"reconcile {orphans} orphans / {events} events: {result_row['seconds']}s "
        f"({result_row['orphans_per_second']}/s), idle tick {result_row['idle_tick_ms']} ms, linked {linked}")
    return result_row


def reconcile_bench(env: BenchEnv, events: int, orphans: int, scale: tuple[int, ...]) -> dict[str, Any]:
    main = reconcile_once(env, events, orphans, "reconcile", statements=True)
    # The same orphans in a ledger twice as large: an idle tick must not grow with the events.
    doubled = reconcile_once(env, events * 2, orphans, "reconcile_doubled")
    ratio = events / orphans
    scaling = {str(size): reconcile_once(env, int(size * ratio), size, f"reconcile_{size}") for size in scale}
    return {"main": main, "events_doubled": doubled, "scaling": scaling}
