"""The WSGI application: ``POST /webhooks/<provider>`` and ``POST /webhooks/<tenant>/<provider>``.

Serve it with any WSGI server (gunicorn ``chimeway.webhooks.wsgi:application``); :func:`serve` runs
the standard library's server for development (``chimeway webhooks serve``): one thread per request,
and a client that sends nothing for :data:`READ_TIMEOUT_SECONDS` is dropped, so a slow client holds
up only itself. The body is read only up to the size limit, so an oversized request is refused
before it is buffered; a negative ``Content-Length`` is a 400, never "read until the client closes".
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from chimeway.webhooks import tenancy
from chimeway.webhooks.endpoint import handle

logger = logging.getLogger("chimeway.webhooks")

#: A provider name; always matched in full (``$`` would let a trailing newline through).
_PROVIDER = re.compile(r"[A-Za-z0-9_.-]{1,128}")

#: The development server drops a connection that sends nothing for this long (headers or body).
READ_TIMEOUT_SECONDS = 30.0


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    parts = [part for part in environ.get("PATH_INFO", "").split("/") if part]
    if parts[:1] != ["webhooks"] or len(parts) not in (2, 3):
        return _respond(start_response, 404, "not found")
    tenant, provider = (parts[1], parts[2]) if len(parts) == 3 else (None, parts[1])
    if not _PROVIDER.fullmatch(provider) or (tenant is not None and not tenancy.valid(tenant)):
        return _respond(start_response, 404, "not found")
    if environ.get("REQUEST_METHOD") != "POST":
        return _respond(start_response, 405, "use POST", [("Allow", "POST")])

    from chimeway.wiring.runtime import current

    limit = current().settings.webhook_max_bytes
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0:  # read(-1) would read until the client closes the connection
        return _respond(start_response, 400, "bad content length")
    if length > limit:
        return _respond(start_response, 413, "payload too large")
    try:
        if length:
            body = environ["wsgi.input"].read(length)
        elif environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream; read one byte past the limit
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _respond(start_response, 413, "payload too large")
        else:
            body = b""
    except TimeoutError:  # the development server's read timeout: the client stopped sending
        return _respond(start_response, 408, "request timeout")
    if len(body) < length:  # the client closed early: never verify a truncated body
        return _respond(start_response, 400, "body shorter than content length")
    headers = {key[5:].replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    status, text = handle(provider, headers, body, tenant)
    return _respond(start_response, status, text)


def _respond(start_response: Callable[..., Any], status: int, text: str, extra: list | None = None) -> list[bytes]:
    payload = (text + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload))), *(extra or [])]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [payload]


class _QuietHandler(WSGIRequestHandler):
    """Logs the request line and status to ``chimeway.webhooks``, never the client address."""

    timeout = READ_TIMEOUT_SECONDS  #: socketserver sets it on the connection: every read gives up after it

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        logger.info("webhook request: " + format, *args)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per connection: a slow client cannot hold up the others."""

    daemon_threads = True  #: a hung connection does not keep the process alive at exit

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            # The thread ends here: hand its database connection back, or every request would keep one.
            from chimeway.wiring.runtime import current

            database = current().database
            if not database.is_closed():
                database.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or went away is routine; the stdlib would print a traceback (with its address).
        logger.info("webhook connection dropped: %s", sys.exc_info()[0].__name__)


def make(host: str = "127.0.0.1", port: int = 8000, read_timeout: float = READ_TIMEOUT_SECONDS) -> WSGIServer:
    """A development server bound to ``host:port`` (port 0 picks a free one); call serve_forever()."""
    handler = type("_Handler", (_QuietHandler,), {"timeout": read_timeout})
    return make_server(host, port, application, server_class=ThreadingWSGIServer, handler_class=handler)


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    with make(host, port) as server:
        logger.info("serving webhooks on http://%s:%d/webhooks/<provider>", *server.server_address[:2])
        server.serve_forever()
