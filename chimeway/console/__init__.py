"""The operator's web console: ``chimeway console``, or ``application`` under any WSGI server.

::

    gunicorn 'chimeway.console:application'          # or mount it under a prefix (SCRIPT_NAME)

Pages: ``/`` overview, ``/deliveries`` (filters, search, keyset pages), ``/deliveries/<id>`` (the
timeline, redrive and cancel), ``/orphans``. HTTP Basic auth from ``CHIMEWAY_CONSOLE_USER`` and
``CHIMEWAY_CONSOLE_PASSWORD``; ``CHIMEWAY_CONSOLE_READ_ONLY`` hides and refuses every action;
``CHIMEWAY_CONSOLE_TENANT`` pins it to one tenant. Needs the ``[console]`` extra (Jinja2).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from chimeway.errors import ConfigurationError

__all__ = ["application", "make_app", "serve"]

logger = logging.getLogger("chimeway.console")

_app: Any = None
_lock = threading.Lock()


def make_app(runtime: Any = None, *, auth: bool = True) -> Any:
    """A console WSGI app over ``runtime`` (default: the configured one). Raises ConfigurationError
    without credentials (unless ``auth=False``) or without Jinja2."""
    from chimeway.console.app import Console

    if runtime is None:
        from chimeway.wiring.runtime import current

        runtime = current()
    return Console(runtime, auth=auth)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The console for WSGI servers, built on first request from the configured runtime. Without
    credentials every request answers 500 naming the two settings (nothing is served unprotected)."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                try:
                    _app = make_app()
                except ConfigurationError as err:
                    body = f"{err}\n".encode()
                    start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                                 ("Content-Length", str(len(body)))])
                    return [body]
    return _app(environ, start_response)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    """Logs the method, path and status: never the query string (a search holds a recipient) nor the client."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        method, _, rest = self.requestline.partition(" ")
        logger.info("console %s %s %s", method, rest.split("?", 1)[0].split(" ", 1)[0], code)


def serve(host: str = "127.0.0.1", port: int = 8025, *, no_auth: bool = False) -> int:
    """Run the console on the development server until interrupted; ``chimeway console``."""
    from chimeway.webhooks.wsgi import ThreadingWSGIServer
    from chimeway.wiring.runtime import current

    if no_auth and not _loopback(host):
        raise ConfigurationError(f"--no-auth is accepted only with a loopback --host (127.0.0.1, ::1), not {host}")
    app = make_app(current(), auth=not no_auth)
    with make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler) as server:
        print(f"console on http://{host}:{server.server_port}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0
