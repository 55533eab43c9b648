"""Structured log context: which delivery, attempt, adapter and tenant a log line is about.

The deliver actor binds the context for the duration of a message; every record logged meanwhile
(by Chimeway, an adapter or anything else in that thread) can carry it as record attributes
``delivery_id``, ``attempt``, ``adapter`` and ``tenant``. Add :class:`ContextFilter` to a handler
to get them, e.g. with the format ``%(levelname)s %(delivery_id)s %(message)s``::

    handler.addFilter(chimeway.wiring.logcontext.ContextFilter())

Only these identifiers are ever bound: never a recipient, payload or secret.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

#: The fields a record carries (None when unbound).
FIELDS = ("delivery_id", "attempt", "adapter", "tenant")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("chimeway_log_context", default=None)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields (only those in FIELDS) to the context until the block ends."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s) {sorted(unknown)}; known: {', '.join(FIELDS)}")
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def update(**fields: Any) -> None:
    """Add fields to the context bound by the enclosing :func:`bind` (it restores the outer one)."""
    _context.set({**(_context.get() or {}), **{key: value for key, value in fields.items() if key in FIELDS}})


def current() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """A handler filter that copies the bound context onto each record (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True
