"""Fixtures for the console tests: Chimeway on each dialect, a worker, a console app and a client
that calls it as a WSGI server would (a real browser drives it in test_browser.py)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from chimeway.testing import start_worker
from chimeway.wiring import runtime as runtime_mod

USER, PASSWORD = "ops", "s3cret-pass"


@pytest.fixture
def settings() -> dict[str, Any]:
    """Console settings for the runtime; a test overrides them before asking for ``runtime``."""
    return {"console_user": USER, "console_password": PASSWORD}


@pytest.fixture
def runtime(database_url: str, settings: dict[str, Any]) -> Iterator[runtime_mod.Runtime]:
    configured = runtime_mod.configure(
        database_url=database_url, redis_url="", environ={}, backoff_min_ms=1, backoff_max_ms=20,
        default_adapter="fake", **settings,
    )
    yield configured
    runtime_mod.reset()


@pytest.fixture
def pg_runtime(pg_url: str, redis_url: str, redis_namespace: str) -> Iterator[runtime_mod.Runtime]:
    """Chimeway on PostgreSQL and Redis, for the tests that run the console and workers as processes."""
    yield runtime_mod.configure(database_url=pg_url, redis_url=redis_url, redis_namespace=redis_namespace,
                                default_adapter="fake", environ={})
    runtime_mod.reset()


@pytest.fixture
def worker(runtime: runtime_mod.Runtime) -> Iterator[Any]:
    with start_worker(runtime, threads=2) as started:
        yield started


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def csrf(self) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.text).group(1)


@dataclass
class Client:
    """Calls the WSGI app in-process; keeps the CSRF cookie as a browser would."""

    app: Any
    auth: tuple[str, str] | None = (USER, PASSWORD)
    cookies: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None, query: str = "") -> Reply:
        body = urlencode(form or {}).encode()
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": self.prefix, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "wsgi.input": io.BytesIO(body), "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
        }
        if self.auth:
            environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            captured["status"], captured["headers"] = int(status.split()[0]), headers

        text = b"".join(self.app(environ, start_response)).decode()
        for name, value in captured["headers"]:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return Reply(captured["status"], dict(captured["headers"]), text)

    def get(self, path: str, query: str = "") -> Reply:
        return self.request("GET", path, query=query)

    def post(self, path: str, form: dict[str, str]) -> Reply:
        return self.request("POST", path, form)


@pytest.fixture
def client(runtime: runtime_mod.Runtime) -> Client:
    from chimeway.console import make_app

    return Client(make_app(runtime))
