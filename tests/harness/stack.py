"""How the harnesses start Chimeway's own processes against the private servers.

Workers are ``dramatiq chimeway.worker`` exactly as a user runs them; the scheduler is
``chimeway scheduler``. Their environment is built from scratch — never inherited ``CHIMEWAY_*``
variables — so a run can only ever reach the private servers it was given.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = str(Path(__file__).resolve().parents[2])
BIN = Path(sys.executable).parent


def base_env(**extra: Any) -> dict[str, str]:
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({key: str(value) for key, value in extra.items() if value is not None})
    return env


def chimeway_env(database_url: str, redis_url: str, **settings: Any) -> dict[str, str]:
    """Worker / scheduler environment: the private servers plus ``CHIMEWAY_<NAME>`` for each setting."""
    extra = {f"CHIMEWAY_{name.upper()}": value for name, value in settings.items()}
    return base_env(CHIMEWAY_DATABASE_URL=database_url, CHIMEWAY_REDIS_URL=redis_url, **extra)


def dramatiq_argv(module: str, processes: int, threads: int, shutdown_ms: int = 5000) -> list[str]:
    return [sys.executable, "-m", "dramatiq", module, "--processes", str(processes), "--threads", str(threads),
            "--worker-shutdown-timeout", str(shutdown_ms), "--path", REPO]


def scheduler_argv() -> list[str]:
    return [str(BIN / "chimeway"), "scheduler"]


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def wsgi_server_argv(port: int, workers: int = 2, threads: int = 8) -> tuple[str, list[str]]:
    """Serve ``chimeway.webhooks.application``: gunicorn (gthread) when installed, else threaded wsgiref."""
    gunicorn = BIN / "gunicorn"
    if gunicorn.exists():
        return f"gunicorn {workers} gthread workers x {threads} threads", [
            str(gunicorn), "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
            "--bind", f"127.0.0.1:{port}", "--keep-alive", "30", "--log-level", "warning",
            "chimeway.webhooks:application",
        ]
    return "wsgiref threaded (gunicorn not installed)", [
        sys.executable, "-m", "tests.harness.wsgi_server", str(port),
    ]
