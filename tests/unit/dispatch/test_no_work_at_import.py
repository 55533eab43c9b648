"""Importing the dispatch layer does nothing: no configuration, no broker, no Dramatiq global broker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from chimeway.dispatch.broker import build_broker
from chimeway.wiring.config import load_settings


def test_given_a_fresh_interpreter_when_every_dispatch_module_is_imported_then_nothing_is_configured():
    script = textwrap.dedent("""
        import dramatiq.broker
        import chimeway, chimeway.store.deliveries, chimeway.testing, chimeway.metrics, chimeway.wiring.logcontext
        import chimeway.dispatch.actors, chimeway.dispatch.broker, chimeway.dispatch.enqueue
        import chimeway.dispatch.middleware, chimeway.dispatch.send, chimeway.dispatch.backoff
        from chimeway.wiring import runtime
        assert runtime._current is None, "configured at import"
        assert dramatiq.broker.global_broker is None, "a global broker was set at import"
        print("clean")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "clean", done.stderr


def test_given_redis_settings_then_the_broker_gets_the_explicit_heartbeat_and_maintenance_chance():
    import redis

    settings = load_settings(environ={}, redis_url="redis://127.0.0.1:6379/15", redis_namespace="cw-unit",
                             broker_heartbeat_ms=2500, broker_maintenance_chance=123)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        broker = build_broker(settings, client)
        assert (broker.heartbeat_timeout, broker.maintenance_chance, broker.namespace) == (2500, 123, "cw-unit")
    finally:
        client.close()
