"""Issue 15's figures: send_many against one-by-one send(), and high-priority latency through a bulk backlog.

- ``send_many``: N deliveries recorded (and enqueued) by ``send()`` one at a time, then N by one
  ``send_many()`` call, on fresh databases of the same run; deliveries per second and the ratio.
- ``priority``: a bulk backlog of N deliveries is queued with ``send_many(priority="bulk")``, the
  workers (processes × threads) start on it, and high-priority sends at a steady rate measure commit
  → terminal while it drains; the backlog still left when the last of them finished is reported, so
  that a run where the backlog was already gone does not pass for one.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from tests.bench.drain import COUNT_TERMINAL, TERMINAL, _unconfigure, configure_chimeway, worker_env
from tests.bench.env import BenchEnv
from tests.harness.progress import say
from tests.harness.stack import dramatiq_argv, wait_until


def _items(n: int, prefix: str, **fields: Any) -> list[dict[str, Any]]:
    return [{"channel": "email", "recipient": f"{prefix}-{i}@example.test", "payload": {"fake_outcomes": ["ok"]},
             "adapter": "fake", **fields} for i in range(n)]


def send_many_bench(env: BenchEnv, n: int) -> dict[str, Any]:
    import chimeway

    figures: dict[str, float] = {}
    for side in ("send", "send_many"):
        url = env.fresh_database(side)
        env.rd.client().flushall()
        configure_chimeway(env, url)
        items = _items(n, side)
        started = time.monotonic()
        try:
            if side == "send":
                for item in items:
                    chimeway.send(item.pop("channel"), item.pop("recipient"), item.pop("payload"), **item)
            else:
                chimeway.send_many(items)
            figures[side] = n / (time.monotonic() - started)
        finally:
            _unconfigure()
            env.drop_database(side)
        say(f"{side}: {n} in {n / figures[side]:.1f}s ({figures[side]:.0f}/s)")
    return {"n": n, "send_per_second": round(figures["send"], 1),
            "send_many_per_second": round(figures["send_many"], 1),
            "send_many_ratio_to_send": round(figures["send_many"] / figures["send"], 2)}


def priority_latency(env: BenchEnv, bulk_n: int, processes: int, threads: int, sends: int,
                     rate: float) -> dict[str, Any]:
    import chimeway

    label = "priority"
    url = env.fresh_database(label)
    env.rd.client().flushall()
    configure_chimeway(env, url)
    chimeway.send_many(_items(bulk_n, "bulk", priority="bulk"))
    env.sup.add(label, dramatiq_argv("chimeway.worker", processes, threads), worker_env(env, url, threads),
                keep_alive=False)
    conn = env.pg.connect(label)
    cur = conn.cursor()
    env.sup.start(label)
    try:
        def terminal() -> int:
            cur.execute(COUNT_TERMINAL)
            return cur.fetchone()[0]

        wait_until(lambda: terminal() > 0, env.cfg.drain_timeout, 0.05, "the backlog to start draining")
        say(f"  {sends} high-priority sends at {rate:.0f}/s through a {bulk_n}-delivery bulk backlog")
        committed: dict[str, float] = {}
        started = time.monotonic()
        for i in range(sends):
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            delivery = chimeway.send("sms", f"+1555{i:07d}", {"fake_outcomes": ["ok"]}, adapter="fake",
                                     priority="high")
            committed[delivery.id] = time.time()

        def all_terminal() -> bool:
            cur.execute("SELECT count(*) FROM chimeway_deliveries WHERE id = ANY(%s::uuid[]) AND status IN %s",
                        (list(committed), TERMINAL))
            return cur.fetchone()[0] >= sends

        wait_until(all_terminal, env.cfg.drain_timeout, 0.05, "the high-priority deliveries")
        backlog_left = bulk_n + sends - terminal()
        cur.execute(
            "SELECT d.id::text, extract(epoch FROM max(a.created_at)) FROM chimeway_deliveries d "
            "JOIN chimeway_delivery_attempts a ON a.delivery_id = d.id WHERE d.id = ANY(%s::uuid[]) GROUP BY d.id",
            (list(committed),),
        )
        latencies = sorted(max(0.0, float(done) - committed[key]) * 1000 for key, done in cur.fetchall())
    finally:
        env.sup.stop(label)
        conn.close()
        _unconfigure()
        env.drop_database(label)
    result = {
        "bulk_n": bulk_n, "processes": processes, "threads": threads, "sends": sends,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
        "bulk_left_when_done": backlog_left,
    }
    say(f"priority: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, {backlog_left} bulk still queued")
    return result
