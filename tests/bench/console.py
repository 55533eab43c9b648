"""Console: the deliveries list and a recipient search on a large table, and what their indexes cost.

``deliveries`` rows (1,000,000 by default) are generated in SQL in a database of their own: 30 days
of sends, four tenants, 200,000 recipients (five deliveries each), a realistic status mix. Each
query is then answered the way the console answers it — the whole WSGI request, HTML included, in
this process — twenty times; the median and the worst are reported with PostgreSQL's plan.

Index cost: migration 0006 adds ``(created_at, id)``. Every INSERT (``send()``) and every non-HOT
UPDATE (each state change of a delivery: its ``status`` and ``updated_at`` are indexed already, so
none is HOT) writes one entry into it. The section times inserting rows and moving them through two
state changes, with and without it.
"""

from __future__ import annotations

import base64
import io
import statistics
import time
from typing import Any

from tests.bench.env import BenchEnv
from tests.harness.progress import say


def build_deliveries(conn: Any, count: int) -> None:
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, tenant_id, notification_id, channel, recipient, adapter, payload, "
        "status, reason, attempt_count, max_attempts, provider, provider_message_id, created_at, updated_at) "
        "SELECT gen_random_uuid(), (ARRAY['default', 'acme', 'globex', 'initech'])[1 + g %% 4], gen_random_uuid(), "
        "'email', 'user-' || (g %% 200000) || '@example.test', (ARRAY['postmark', 'sendgrid', 'smtp'])[1 + g %% 3], "
        "'{\"subject\": \"Your order shipped\"}'::jsonb, "
        "CASE WHEN g %% 50 = 0 THEN 'cancelled' WHEN g %% 97 = 0 THEN 'suppressed' ELSE 'succeeded' END, "
        "CASE WHEN g %% 50 = 0 THEN 'retries_exhausted' WHEN g %% 97 = 0 THEN 'recipient_suppressed' END, "
        "1, 5, 'postmark', 'pm-' || g, "
        "now() - (g * interval '2.592 seconds'), now() - (g * interval '2.592 seconds') + interval '1 second' "
        "FROM generate_series(1, %s) AS g",
        (count,),
    )
    cur.execute("ANALYZE chimeway_deliveries")


def _request(app: Any, path: str, query: str = "") -> tuple[int, float]:
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(b""), "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"bench:bench").decode(),
    }
    status: list[int] = []
    started = time.perf_counter()
    b"".join(app(environ, lambda s, h: status.append(int(s.split()[0]))))
    return status[0], (time.perf_counter() - started) * 1000


def _timed(app: Any, path: str, query: str = "", runs: int = 20) -> dict[str, Any]:
    _request(app, path, query)  # warm the connection and the plan cache
    times = []
    for _ in range(runs):
        code, ms = _request(app, path, query)
        assert code == 200, (path, query, code)
        times.append(ms)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def _plan(conn: Any, sql: str, params: tuple[Any, ...]) -> str:
    cur = conn.cursor()
    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
    lines = [row[0] for row in cur.fetchall()]
    return " | ".join(line.strip() for line in lines if "Index" in line or "Seq Scan" in line or "Execution" in line)


def index_cost(conn: Any, rows: int) -> dict[str, Any]:
    """Seconds to insert ``rows`` deliveries and move each through two state changes, with the console's
    index and without (in an empty copy of the table, so only that index differs)."""
    cur = conn.cursor()
    result = {}
    for label, keep in (("with_console_index", True), ("without", False)):
        cur.execute("DROP TABLE IF EXISTS bench_copy")
        cur.execute("CREATE TABLE bench_copy (LIKE chimeway_deliveries INCLUDING ALL)")
        if not keep:
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'bench_copy' "
                        "AND indexdef LIKE '%%(created_at, id)%%'")
            for (name,) in cur.fetchall():
                cur.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        cur.execute(
            "INSERT INTO bench_copy (id, notification_id, channel, recipient, adapter, status) "
            "SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'user-' || g || '@example.test', 'fake', 'pending' "
            "FROM generate_series(1, %s) AS g", (rows,),
        )
        inserted = time.perf_counter() - started
        cur.execute("UPDATE bench_copy SET status = 'dispatched', attempt_count = 1, updated_at = now()")
        cur.execute("UPDATE bench_copy SET status = 'succeeded', updated_at = now()")
        result[label] = {"insert_s": round(inserted, 3), "insert_and_two_updates_s": round(time.perf_counter() - started, 3)}
    cur.execute("DROP TABLE bench_copy")
    with_, without = result["with_console_index"], result["without"]
    result["extra_cost_percent"] = round(
        100 * (with_["insert_and_two_updates_s"] / without["insert_and_two_updates_s"] - 1), 1)
    return result


def console_bench(env: BenchEnv, count: int) -> dict[str, Any]:
    import chimeway
    from chimeway.console import make_app
    from chimeway.console.queries import PAGE_SIZE, tenants
    from chimeway.wiring.runtime import reset

    label = "console"
    url = env.fresh_database(label)
    conn = env.pg.connect(label)
    conn.autocommit = True
    try:
        started = time.monotonic()
        build_deliveries(conn, count)
        say(f"console: {count} deliveries generated in {time.monotonic() - started:.1f}s")
        runtime = chimeway.configure(database_url=url, redis_url=env.rd.url(), environ={},
                                     console_user="bench", console_password="bench")
        app = make_app(runtime)
        cur = conn.cursor()
        cur.execute("SELECT created_at, id FROM chimeway_deliveries ORDER BY created_at DESC, id DESC "
                    "OFFSET %s LIMIT 1", (count // 2,))
        middle_at, middle_id = cur.fetchone()
        deep = f"after={middle_at.isoformat()}|{middle_id}".replace("+", "%2B")
        result = {
            "deliveries": count,
            "list_first_page": _timed(app, "/deliveries"),
            "list_page_in_the_middle": _timed(app, "/deliveries", deep),
            "search_recipient": _timed(app, "/deliveries", "q=user-4242%40example.test&in=recipient"),
            "search_recipient_in_tenant": _timed(app, "/deliveries", "q=user-4242%40example.test&in=recipient&tenant=acme"),
            "filter_cancelled": _timed(app, "/deliveries", "status=cancelled"),
            "overview": _timed(app, "/", runs=3),
            "plans": {
                "list": _plan(conn, "SELECT id FROM chimeway_deliveries d ORDER BY d.created_at DESC, d.id DESC LIMIT %s",
                              (PAGE_SIZE + 1,)),
                # As the console searches across tenants: every tenant named, so the recipient index serves.
                "search": _plan(conn, "SELECT id FROM chimeway_deliveries d WHERE d.tenant_id = ANY(%s) AND "
                                      "d.recipient = %s ORDER BY d.created_at DESC, d.id DESC LIMIT %s",
                                (tenants(), "user-4242@example.test", PAGE_SIZE + 1)),
            },
            "index_cost_100k": index_cost(conn, 100_000),
        }
    finally:
        reset()
        conn.close()
        env.drop_database(label)
    for name in ("list_first_page", "list_page_in_the_middle", "search_recipient", "search_recipient_in_tenant",
                 "filter_cancelled", "overview"):
        say(f"console {name}: median {result[name]['median_ms']} ms, max {result[name]['max_ms']} ms")
    say(f"console index cost: {result['index_cost_100k']}")
    return result
