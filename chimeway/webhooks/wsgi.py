"""The WSGI application: ``POST /webhooks/<provider>`` and ``POST /webhooks/<tenant>/<provider>``.

Serve it with any WSGI server (gunicorn ``chimeway.webhooks.wsgi:application``); :func:`serve` runs
the standard library's server for development (``chimeway webhooks serve``). The body is read only
up to the size limit, so an oversized request is refused before it is buffered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from chimeway.webhooks import tenancy
from chimeway.webhooks.endpoint import handle

logger = logging.getLogger("chimeway.webhooks")

#: A provider name; always matched in full (``$`` would let a trailing newline through).
_PROVIDER = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    parts = [part for part in environ.get("PATH_INFO", "").split("/") if part]
    if parts[:1] != ["webhooks"] or len(parts) not in (2, 3):
        return _respond(start_response, 404, "not found")
    tenant, provider = (parts[1], parts[2]) if len(parts) == 3 else (None, parts[1])
    if not _PROVIDER.fullmatch(provider) or (tenant is not None and not tenancy.valid(tenant)):
        return _respond(start_response, 404, "not found")
    if environ.get("REQUEST_METHOD") != "POST":
        return _respond(start_response, 405, "use POST", [("Allow", "POST")])

    from chimeway.runtime import current

    limit = current().settings.webhook_max_bytes
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _respond(start_response, 400, "bad content length")
    if length > limit:
        return _respond(start_response, 413, "payload too large")
    if length:
        body = environ["wsgi.input"].read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream; read one byte past the limit
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            return _respond(start_response, 413, "payload too large")
    else:
        body = b""
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        logger.info("webhook request: " + format, *args)


def make(host: str = "127.0.0.1", port: int = 8000) -> WSGIServer:
    """A development server bound to ``host:port`` (port 0 picks a free one); call serve_forever()."""
    return make_server(host, port, application, handler_class=_QuietHandler)


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    with make(host, port) as server:
        logger.info("serving webhooks on http://%s:%d/webhooks/<provider>", *server.server_address[:2])
        server.serve_forever()
