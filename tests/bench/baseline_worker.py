"""The baseline: what a skilled engineer writes without Chimeway. ``dramatiq tests.bench.baseline_worker``.

One Dramatiq actor, plain psycopg2, one connection per worker thread, one transaction per delivery:
select the row (locked), insert an attempt, update the row. It works on Chimeway's own tables (the
same migrated schema, in a database of its own) so both sides write the same rows and indexes.
Like the Dramatiq CLI expects, importing this module builds the broker from the environment:
``BENCH_REDIS_URL`` and ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import os
import threading
import uuid

import dramatiq
import psycopg2
from dramatiq.brokers.redis import RedisBroker

from tests.bench import BASELINE_ACTOR, BASELINE_NAMESPACE, BASELINE_QUEUE

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"], namespace=BASELINE_NAMESPACE)
dramatiq.set_broker(broker)

_local = threading.local()


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg2.connect(os.environ["BENCH_DATABASE_URL"])
    return conn


@dramatiq.actor(actor_name=BASELINE_ACTOR, queue_name=BASELINE_QUEUE, max_retries=5)
def baseline_deliver(delivery_id: str) -> None:
    conn = _connection()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT status, attempt_count, adapter FROM chimeway_deliveries WHERE id = %s FOR UPDATE",
                (delivery_id,),
            )
            row = cur.fetchone()
            if row is None or row[0] == "succeeded":
                return
            attempt = row[1] + 1
            cur.execute(
                "INSERT INTO chimeway_delivery_attempts (id, delivery_id, attempt_number, outcome, adapter, "
                "duration_ms) VALUES (%s, %s, %s, 'succeeded', %s, 0)",
                (str(uuid.uuid4()), delivery_id, attempt, row[2]),
            )
            cur.execute(
                "UPDATE chimeway_deliveries SET status = 'succeeded', attempt_count = %s, updated_at = now() "
                "WHERE id = %s",
                (attempt, delivery_id),
            )
    except psycopg2.Error:
        conn.close()
        raise
