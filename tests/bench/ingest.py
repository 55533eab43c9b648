"""Webhook ingest: signed Mailgun events through ``chimeway.webhooks.handle`` and through the WSGI app.

The events name deliveries that exist and succeeded (delivered, opened, clicked in turn), so every
request takes the full path: verify, parse, raw row, ledger event, projection, broadcast. The WSGI
app runs under gunicorn (gthread workers) when it is installed, else under a threaded wsgiref
server; the load generator is a bounded pool of keep-alive clients in this process, each signing
its own fresh events.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections import Counter
from typing import Any

from tests.bench.env import BenchEnv
from tests.harness import webhooks
from tests.harness.progress import say
from tests.harness.servers import free_port, wait_for_port
from tests.harness.stack import chimeway_env, wsgi_server_argv

EVENT_CYCLE = ("delivered", "opened", "clicked")


def create_sent_deliveries(conn: Any, n: int, prefix: str) -> list[str]:
    """``n`` succeeded deliveries matched by the events tagged ``<prefix>-<i>``; returns the tags."""
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, status, "
        "attempt_count, provider, provider_message_id) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'bench-' || g || '@example.test', 'fake', "
        "'succeeded', 1, %s, '<' || %s || '-' || g || '@harness.test>' FROM generate_series(0, %s - 1) AS g",
        (webhooks.PROVIDER, prefix, n),
    )
    return [f"{prefix}-{i}" for i in range(n)]


def ingest_handle(env: BenchEnv, events: int) -> dict[str, Any]:
    import chimeway
    from chimeway.webhooks import handle
    from chimeway.wiring.runtime import reset

    url = env.fresh_database("ingest")
    conn = env.pg.connect("ingest")
    tags = create_sent_deliveries(conn, max(1, events // len(EVENT_CYCLE)), "ingest")
    chimeway.configure(database_url=url, redis_url=env.rd.url(), mailgun_webhook_signing_key=webhooks.SIGNING_KEY,
                       environ={})
    requests = [webhooks.mailgun_event(tags[i % len(tags)], EVENT_CYCLE[(i // len(tags)) % len(EVENT_CYCLE)])
                for i in range(events)]
    statuses: Counter[int] = Counter()
    try:
        handle(webhooks.PROVIDER, requests[0].headers, requests[0].body)  # warm: first connection, imports
        started = time.monotonic()
        for request in requests[1:]:
            status, _ = handle(webhooks.PROVIDER, request.headers, request.body)
            statuses[status] += 1
        seconds = time.monotonic() - started
    finally:
        reset()
        conn.close()
        env.drop_database("ingest")
    result = {"events": events - 1, "seconds": round(seconds, 2), "per_second": round((events - 1) / seconds, 1),
              "statuses": {str(k): v for k, v in statuses.items()}}
    say(f"ingest via handle: {result['per_second']}/s {result['statuses']}")
    return result


def ingest_wsgi(env: BenchEnv, seconds: float, clients: int) -> dict[str, Any]:
    url = env.fresh_database("wsgi")
    conn = env.pg.connect("wsgi")
    tags = create_sent_deliveries(conn, 5_000, "wsgi")
    port = free_port()
    server, argv = wsgi_server_argv(port)
    env.sup.add("wsgi", argv, chimeway_env(url, env.rd.url(), mailgun_webhook_signing_key=webhooks.SIGNING_KEY),
                keep_alive=False)
    env.sup.start("wsgi")
    try:
        wait_for_port(port, 30)
        result = _load(port, tags, seconds, clients)
    finally:
        env.sup.stop("wsgi")
        conn.close()
        env.drop_database("wsgi")
    result["server"] = server
    say(f"ingest via WSGI ({server}): {result['per_second']}/s {result['statuses']}")
    return result


def _load(port: int, tags: list[str], seconds: float, clients: int) -> dict[str, Any]:
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    def client(index: int) -> None:
        mine: list[float] = []
        seen: Counter[str] = Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = index
        while time.monotonic() < stop_at:
            event = webhooks.mailgun_event(tags[i % len(tags)], EVENT_CYCLE[(i // len(tags)) % len(EVENT_CYCLE)])
            i += clients
            started = time.monotonic()
            try:
                conn.request("POST", f"/webhooks/{webhooks.PROVIDER}", body=event.body, headers=event.headers)
                response = conn.getresponse()
                response.read()
                seen[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as err:
                seen[type(err).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            mine.append((time.monotonic() - started) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.update(seen)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    latencies.sort()
    ok = statuses.get("200", 0)
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": sum(statuses.values()),
        "per_second": round(ok / elapsed, 1),
        "statuses": dict(statuses),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
    }
