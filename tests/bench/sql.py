"""What the side being measured sent to PostgreSQL, from pg_stat_statements (the bench's server preloads
it, see tests/bench/run.py) and pg_stat_database: statements, server time and commits per delivery."""

from __future__ import annotations

from typing import Any

from tests.bench.env import BenchEnv

#: Statements of the bench itself (row creation, progress polls), not of the side being measured.
_BENCH_SQL = ("generate_series", "count(*) FROM chimeway_deliveries WHERE status IN", "pg_stat_statements",
              "DATABASE", "pg_catalog", "ANALYZE", "pg_stat_database")


def _sessions(cur: Any) -> int:
    cur.execute("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database")
    return int(cur.fetchone()[0])


def reset_statements(env: BenchEnv) -> int:
    """Forget the statements seen so far; returns the count of sessions opened so far (-1 if unknown)."""
    try:
        conn = env.pg.connect()
    except Exception:
        return -1
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_stat_statements_reset()")
        return _sessions(cur)
    except Exception:
        return -1
    finally:
        conn.close()


def commits(env: BenchEnv, database: str) -> int:
    """Transactions committed so far in ``database`` (each autocommitted statement is one)."""
    conn = env.pg.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts are flushed lazily
        cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,))
        row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def top_statements(env: BenchEnv, n: int, sessions_before: int = -1, limit: int = 12) -> dict[str, Any]:
    """The SQL sent since the reset: statements per item (delivery, orphan…), and where the server's time went."""
    conn = env.pg.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT query, calls, total_exec_time, mean_exec_time FROM pg_stat_statements")
        rows = [r for r in cur.fetchall() if not any(marker in r[0] for marker in _BENCH_SQL)
                and r[0].strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
        sessions = _sessions(cur) - sessions_before if sessions_before >= 0 else None
    finally:
        conn.close()
    total_calls = sum(r[1] for r in rows)
    total_time = sum(r[2] for r in rows) or 1.0
    rows.sort(key=lambda r: r[2], reverse=True)
    return {
        "sessions_opened": sessions,  #: new PostgreSQL connections meanwhile (pool churn shows here)
        "statements_per_delivery": round(total_calls / n, 2),
        "server_ms_per_delivery": round(total_time / n, 3),
        "top": [{"query": " ".join(r[0].split())[:160], "per_delivery": round(r[1] / n, 2),
                 "mean_ms": round(r[3], 3), "share_pct": round(100 * r[2] / total_time, 1)} for r in rows[:limit]],
    }
