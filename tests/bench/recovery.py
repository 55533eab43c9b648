"""Recovery after a Redis loss: one sweep re-enqueues N lost deliveries.

N pending deliveries, spread over the three lanes, are inserted in SQL as last changed an hour ago
and never enqueued (what a Redis restart without persistence leaves); one ``chimeway.sweep()`` then
finds them and sends their messages. Reported: deliveries re-enqueued per second, and each lane's
queue length afterwards (every one of them must be queued, into its own lane).
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench.drain import _unconfigure, configure_chimeway
from tests.bench.env import BenchEnv
from tests.harness.progress import say

LANES = ("high", "normal", "bulk")


def sweep_bench(env: BenchEnv, n: int) -> dict[str, Any]:
    from chimeway.api import sweep
    from chimeway.dispatch.lanes import LANES as QUEUES
    from chimeway.states import Priority

    label = "recovery"
    url = env.fresh_database(label)
    client = env.rd.client()
    client.flushall()
    conn = env.pg.connect(label)
    try:
        conn.cursor().execute(
            "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, priority, "
            "created_at, updated_at) SELECT gen_random_uuid(), gen_random_uuid(), 'email', "
            "'lost-' || g || '@example.test', 'fake', 'pending', (%s::text[])[1 + g %% 3], "
            "now() - interval '1 hour', now() - interval '1 hour' FROM generate_series(1, %s) AS g",
            (list(LANES), n),
        )
        conn.cursor().execute("VACUUM ANALYZE chimeway_deliveries")
        runtime = configure_chimeway(env, url)
        try:
            started = time.monotonic()
            result = sweep()
            seconds = time.monotonic() - started
            namespace = runtime.settings.redis_namespace
            queued = {lane: client.llen(f"{namespace}:{QUEUES[Priority(lane)].queue}") for lane in LANES}
        finally:
            _unconfigure()
    finally:
        conn.close()
        env.drop_database(label)
    figures = {"lost": n, "reenqueued": result.reenqueued, "seconds": round(seconds, 2),
               "per_second": round(result.reenqueued / seconds), "queued_by_lane": queued}
    say(f"sweep: {figures}")
    return figures
