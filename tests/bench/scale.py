"""Scale (issue 13): a year at a million notifications a day, measured on a loaded database.

For each size N the history is generated in SQL (minutes, not hours): N deliveries spread evenly
over ``DAYS`` days with UUIDv7 ids made from their own time, one attempt per delivery and two ledger
events (sent, delivered), plus a small open set (pending, failed) changed a moment ago. With
CHIMEWAY_RETENTION_DAYS = ``DAYS - 1`` exactly the oldest day is past retention, so one ``prune``
removes one day's history.

On PostgreSQL attempts and events are partitioned by month (migration 0009). So that one day is one
drop, the bench lays its history out as the partitions ``d0`` (the oldest day), ``d1`` (the next)
and ``rest`` (up to next month), instead of the empty legacy partition: prune handles any ranges, and
this keeps the number of partitions a lookup probes (six per table with the months ahead and the
DEFAULT) what a 90-day retention gives with months. Figures (milliseconds of wall time around calls
that are one or a few SQL statements each, so database time plus a little Python):

- ``status_ms``: ``chimeway.ops.status.collect`` (what ``chimeway status --json`` prints), best of 3;
- ``sweep_idle_ms`` / ``reconcile_idle_ms``: a sweep and a reconcile with nothing to do, best of 5;
- ``prune_day_seconds``: one prune removing the oldest day: its partitions dropped and their keys
  deleted (``prune_drop_seconds``, timed apart), then its deliveries by the chunked walk;
- ``upgrade_seconds``: migration 0011 applied to the loaded history (it counts the outcomes per
  hour): the history is loaded under schema ``HISTORY_SCHEMA`` and then upgraded, as an installation
  is, so the bench measures the upgrade and starts from the counts an upgraded system has;
- ``drain_ratio``: deliveries/s of the same workers draining ``scale_drain_n`` fresh sends on the
  loaded database divided by the same on an empty one, in ``scale_drain_rounds`` rounds, the side
  that drains first alternating; the median round (1.0: the history costs the hot path nothing).
  Each drain also reports its claim's and record's mean time per call and the deliveries table's
  vacuum and analyze counts;
- ``outcome_counts_off``: hours whose outcome counts differ from the deliveries at the end (0).

``ids`` inserts ``id_rows`` rows keyed by UUIDv4 and by UUIDv7 into two bare tables (batches of
10,000 per statement) and reports rows/s and the primary key's size for each.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from tests.bench.drain import send_many, worker_env
from tests.bench.env import BenchEnv
from tests.bench.sql import reset_statements, top_statements
from tests.harness.progress import say
from tests.harness.stack import dramatiq_argv

#: Days of history loaded; retention is one day less, so prune removes exactly the oldest day.
DAYS = 11

#: A UUIDv7 from the timestamp ``t`` and a seed ``g`` (48-bit Unix milliseconds, version 7, variant
#: 10, the rest from md5 of the seed): what chimeway.models.new_id makes, in SQL.
UUID7_SQL = (
    "(lpad(to_hex((extract(epoch FROM {t}) * 1000)::bigint), 12, '0') || '7' || substr(md5(({g})::text), 1, 3) "
    "|| '8' || substr(md5(({g})::text), 4, 15))::uuid"
)

OPEN_ROWS = 1_000

#: The schema the history is loaded under: the one before outcome counts (0011). Loading through
#: 0011's triggers would leave a burst of N changes folded at once, a state a live system (folding a
#: minute's changes every minute) is not in; an installation's upgrade counts its history instead.
HISTORY_SCHEMA = 10


def lay_out_days(cur: Any) -> None:
    """Partitions d0, d1 and rest (to next month) for the history instead of the empty legacy one."""
    cur.execute(f"SELECT now() - interval '{DAYS} days 2 minutes', date_trunc('month', now()) + interval '1 month'")
    first, next_month = cur.fetchone()
    day = timedelta(days=1)
    for parent in ("chimeway_delivery_attempts", "chimeway_events"):
        cur.execute(f"DROP TABLE {parent}_legacy")  # empty: the database is new
        for name, lower, upper in (("d0", first, first + day), ("d1", first + day, first + 2 * day),
                                   ("rest", first + 2 * day, next_month)):
            cur.execute(f"CREATE TABLE {parent}_{name} PARTITION OF {parent} FOR VALUES FROM (%s) TO (%s)",
                        (lower, upper))
            cur.execute("SELECT chimeway_partition_keys(%s, %s)", (parent, f"{parent}_{name}"))


def load_history(conn: Any, n: int) -> None:
    """N terminal deliveries over DAYS days (the newest a minute ago), their attempts and events,
    inserted oldest first, as a live system writes them (so a day's rows sit together in the heap in
    time order), into a database at schema ``HISTORY_SCHEMA``."""
    cur = conn.cursor()
    lay_out_days(cur)
    span = f"interval '{DAYS} days'"
    at = f"(now() - interval '1 minute' - {span} * (g::float8 / {n}))"
    started = time.monotonic()
    cur.execute(
        "CREATE UNLOGGED TABLE bench_history AS SELECT g, "
        f"{UUID7_SQL.format(t=at, g='g')} AS id, {at} AS at FROM generate_series(%s, 1, -1) AS g",
        (n,),
    )
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, attempt_count, "
        "provider, provider_message_id, delivered_at, created_at, updated_at) "
        "SELECT id, id, 'email', 'bench-' || g || '@example.test', 'fake', 'succeeded', 1, 'fake', "
        "'fake-' || g, at, at, at FROM bench_history"
    )
    say(f"scale {n}: deliveries loaded in {time.monotonic() - started:.0f}s")
    cur.execute(
        "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, "
        "provider_message_id, created_at) "
        f"SELECT {UUID7_SQL.format(t='at', g='-g')}, id, 1, 'succeeded', 'fake', 'fake-' || g, at FROM bench_history"
    )
    say(f"scale {n}: attempts loaded at {time.monotonic() - started:.0f}s")
    for kind, offset in (("sent", 1), ("delivered", 2)):
        cur.execute(
            "INSERT INTO chimeway_events (id, delivery_id, type, provider, provider_message_id, provider_event_id, "
            "occurred_at, received_at, idempotency_key) "
            f"SELECT {UUID7_SQL.format(t='at', g=f'(g * 3 + {offset})')}, id, %s, 'fake', 'fake-' || g, "
            f"'{kind}-' || g, at, at, 'fake:{kind}-' || g || ':0' FROM bench_history",
            (kind,),
        )
    say(f"scale {n}: events loaded at {time.monotonic() - started:.0f}s")
    cur.execute("DROP TABLE bench_history")
    # The open set: sent a moment ago, some waiting for a retry (what a busy system has in flight).
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, "
        "next_attempt_at, enqueued_at) SELECT gen_random_uuid(), gen_random_uuid(), 'email', "
        "'open-' || g || '@example.test', 'fake', CASE WHEN g %% 2 = 0 THEN 'pending' ELSE 'failed' END, "
        "now() + interval '1 hour', now() FROM generate_series(1, %s) AS g",
        (OPEN_ROWS,),
    )
    say(f"scale {n}: loaded in {time.monotonic() - started:.0f}s")


def counts_off(conn: Any) -> int:
    """Hours whose outcome counts differ from a count of the deliveries, after the upgrade, the prune
    and the drains (0: the counts an upgraded system reads are exact)."""
    from tests.harness.outcomes import drift_of

    cur = conn.cursor()

    def rows(text: str) -> list[Any]:
        cur.execute(text)
        return cur.fetchall()

    return len(drift_of(rows, postgres=True))


def best_ms(fn: Any, times: int) -> float:
    runs = []
    for _ in range(times):
        started = time.monotonic()
        fn()
        runs.append((time.monotonic() - started) * 1000)
    return round(min(runs), 2)


#: The worker's statements whose time per call each drain reports: what a drain's rate follows (the
#: claim's went 0.3 to 1.2 ms with the planner's statistics until its guard was rewritten, README "Scale").
_WORKER_SQL = {"claim": "chimeway_load_and_claim_many", "record": "chimeway_record_many"}


def drain_rate(env: BenchEnv, url: str, conn: Any, label: str, n: int) -> dict[str, Any]:
    """Deliveries/s of 2 x 8 workers draining ``n`` fresh sends on the database at ``url``, the mean
    time per call of the worker's claim and record statements, and the deliveries table's vacuum
    and analyze counts and dead rows when the drain began."""
    import chimeway
    from chimeway.wiring.runtime import reset

    env.rd.client().flushall()
    chimeway.configure(database_url=url, redis_url=env.rd.url(), environ={})
    cur = conn.cursor()
    open_count = "SELECT count(*) FROM chimeway_deliveries WHERE status IN ('pending', 'dispatched', 'failed')"
    cur.execute(open_count)
    before = cur.fetchone()[0]
    try:
        send_many(n)
    finally:
        reset()
    cur.execute("SELECT autovacuum_count + vacuum_count, autoanalyze_count + analyze_count, n_dead_tup "
                "FROM pg_stat_user_tables WHERE relname = 'chimeway_deliveries'")
    vacuums, analyzes, dead = cur.fetchone()
    reset_statements(env)
    env.sup.add(label, dramatiq_argv("chimeway.worker", 2, 8), worker_env(env, url, 8), keep_alive=False)
    env.sup.start(label)
    try:
        first: float | None = None
        left_at_first = left = n
        deadline = time.monotonic() + env.cfg.drain_timeout
        while time.monotonic() < deadline:
            cur.execute(open_count)
            left = cur.fetchone()[0] - before  # the loaded open set has no message: it stays open
            if first is None and left < n:
                first, left_at_first = time.monotonic(), left
            if left <= 0:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{label}: {left} of {n} still open")
        rate = left_at_first / max(time.monotonic() - first, 1e-6)
    finally:
        env.sup.stop(label)
    top = top_statements(env, n, limit=20)["top"]
    mean_ms = {name: next((t["mean_ms"] for t in top if statement in t["query"]), None)
               for name, statement in _WORKER_SQL.items()}
    say(f"{label}: {rate:.0f} deliveries/s, mean ms {mean_ms}")
    return {"per_second": round(rate, 1), "mean_ms": mean_ms, "vacuums": vacuums, "analyzes": analyzes,
            "dead_rows": dead}


def scale_once(env: BenchEnv, n: int) -> dict[str, Any]:
    import chimeway
    from chimeway import db as dbmod
    from chimeway.api import sweep
    from chimeway.ops import partitions
    from chimeway.ops.retention import cutoffs, prune_history
    from chimeway.ops.status import collect
    from chimeway.wiring.runtime import reset

    label = f"scale_{n}"
    url = env.database_at(label, HISTORY_SCHEMA)
    conn = env.pg.connect(label)
    try:
        load_history(conn, n)
        upgrade_seconds = env.migrate(url)  # to the code's schema: 0011 counts the history's outcomes
        cur = conn.cursor()
        cur.execute("VACUUM ANALYZE")
        cur.execute("SELECT pg_database_size(current_database())")
        size_mib = round(cur.fetchone()[0] / 2**20)
        runtime = chimeway.configure(
            database_url=url, redis_url=env.rd.url(), environ={"CHIMEWAY_RETENTION_DAYS": str(DAYS - 1)}
        )
        try:
            status_ms = best_ms(lambda: collect(runtime), 3)
            sweep_ms = best_ms(sweep, 5)
            reconcile_ms = best_ms(chimeway.reconcile, 5)
            now = dbmod.now()
            started = time.monotonic()
            upkeep = partitions.upkeep(runtime.database, now, *cutoffs(runtime.settings, now))
            drop_seconds = round(time.monotonic() - started, 2)
            pruned = prune_history(runtime=runtime, now=now)
            prune_seconds = round(time.monotonic() - started, 2)
            status_after_ms = best_ms(lambda: collect(runtime), 3)
        finally:
            reset()
        row = {
            "deliveries": n, "database_mib": size_mib, "status_ms": status_ms, "sweep_idle_ms": sweep_ms,
            "reconcile_idle_ms": reconcile_ms, "prune_day_seconds": prune_seconds, "prune_drop_seconds": drop_seconds,
            "pruned": {"deliveries": pruned.deliveries, "attempts": pruned.attempts, "events": pruned.events,
                       "partitions": upkeep.dropped, "kept_partitions": upkeep.kept},
            "status_after_prune_ms": status_after_ms, "upgrade_seconds": upgrade_seconds,
        }
        say(f"scale {n}: {row}")
        if env.cfg.scale_drain_n:
            row.update(drain_rounds(env, url, conn, label))
        row["outcome_counts_off"] = counts_off(conn)
    finally:
        conn.close()
        env.drop_database(label)
    return row


def drain_rounds(env: BenchEnv, url: str, conn: Any, label: str) -> dict[str, Any]:
    """The same drain on the loaded database and on an empty one, round after round (so that both
    sides of a round share the machine's state of the moment), the side that goes first alternating
    (so that neither always drains right after the prune or after the other's run): each round's
    ratio and the median."""
    empty_url = env.fresh_database("scale_empty")
    empty_conn = env.pg.connect("scale_empty")
    rounds = []
    try:
        for number in range(env.cfg.scale_drain_rounds):
            sides = {"loaded": (url, conn, f"{label}_drain_{number}"),
                     "empty": (empty_url, empty_conn, f"scale_empty_drain_{number}")}
            order = ("loaded", "empty") if number % 2 == 0 else ("empty", "loaded")
            drained = {side: drain_rate(env, *sides[side], env.cfg.scale_drain_n) for side in order}
            loaded, empty = drained["loaded"]["per_second"], drained["empty"]["per_second"]
            rounds.append({"loaded_per_second": loaded, "empty_per_second": empty, "ratio": round(loaded / empty, 3),
                           "first": order[0], "loaded": drained["loaded"], "empty": drained["empty"]})
    finally:
        empty_conn.close()
        env.drop_database("scale_empty")
    return {"drain_rounds": rounds, "drain_ratio": round(statistics.median(r["ratio"] for r in rounds), 3)}


def id_inserts(env: BenchEnv, rows: int) -> dict[str, Any]:
    """Insert throughput and primary-key size of UUIDv4 against UUIDv7 keys."""
    env.fresh_database("scale_ids")
    conn = env.pg.connect("scale_ids")
    result: dict[str, Any] = {"rows": rows}
    try:
        cur = conn.cursor()
        ids = {"uuid4": "gen_random_uuid()",
               "uuid7": UUID7_SQL.format(t="clock_timestamp()", g="g")}
        for name, expression in ids.items():
            cur.execute(f"CREATE TABLE ids_{name} (id uuid PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())")
            started = time.monotonic()
            for first in range(0, rows, 10_000):
                cur.execute(
                    f"INSERT INTO ids_{name} (id) SELECT {expression} FROM generate_series(%s, %s) AS g",
                    (first, min(rows, first + 10_000) - 1),
                )
            seconds = time.monotonic() - started
            cur.execute(f"SELECT pg_relation_size('ids_{name}_pkey')")
            result[name] = {"rows_per_second": round(rows / seconds), "pkey_mib": round(cur.fetchone()[0] / 2**20, 1)}
            say(f"ids {name}: {result[name]}")
    finally:
        conn.close()
        env.drop_database("scale_ids")
    return result


def scale_bench(env: BenchEnv) -> dict[str, Any]:
    cfg = env.cfg
    result: dict[str, Any] = {"sizes": {str(n): scale_once(env, n) for n in cfg.scale_sizes}}
    if cfg.id_rows:
        result["ids"] = id_inserts(env, cfg.id_rows)
    return result


def summary_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary's flat figures, suffixed by size (``_1m``, ``_10m``)."""
    flat: dict[str, Any] = {}
    for size, row in result["sizes"].items():
        suffix = f"_{int(size) // 1_000_000}m" if int(size) >= 1_000_000 else f"_{size}"
        for name in ("status_ms", "sweep_idle_ms", "reconcile_idle_ms", "prune_day_seconds", "drain_ratio"):
            flat[name + suffix] = row.get(name)
    return flat
