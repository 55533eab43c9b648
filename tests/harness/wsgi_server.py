"""Fallback WSGI server for the harnesses when gunicorn is missing: wsgiref, one thread per request."""

from __future__ import annotations

import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


def main() -> None:
    from chimeway.webhooks import application

    server = make_server("127.0.0.1", int(sys.argv[1]), application, _ThreadingServer, _QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
