"""Fallback WSGI server for the harnesses when gunicorn is missing: Chimeway's own development server
(wsgiref, one thread per connection)."""

from __future__ import annotations

import sys


def main() -> None:
    from chimeway.webhooks.wsgi import make

    make("127.0.0.1", int(sys.argv[1])).serve_forever()


if __name__ == "__main__":
    main()
