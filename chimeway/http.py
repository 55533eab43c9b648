"""How an HTTP provider's error answer becomes a :class:`DeliveryError`: the rules Chimeway's own HTTP
adapters follow, public so that a custom HTTP adapter classifies exactly as they do.

The order of the rules::

    the provider's own error code, looked up in your table      -> the outcome you wrote for it
    else the HTTP status in your per-provider overrides         -> that outcome
    else 408, 425, 429 and every 5xx                            -> TemporaryError (honours Retry-After)
         3xx (redirects are never followed)                     -> PermanentError
         every other 4xx                                        -> PermanentError

The error returned keeps only the status, the provider's code, *your* description and the wait asked
for (``Retry-After``) in its ``response`` summary (what the attempt row stores): never the
provider's own error text, which often echoes the recipient. Nothing here needs an HTTP client; the
client-side failures (timeouts, refused connections) are the adapter's to translate into
:class:`TemporaryError`. Exported by :mod:`chimeway.adapter` too.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from chimeway.errors import DeliveryError, PermanentError, TemporaryError

__all__ = ["TEMPORARY_STATUSES", "Classification", "http_error", "parse_retry_after", "status_outcome"]

#: HTTP statuses that mean "try again later" when the provider's body gives no code we know
TEMPORARY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: One classification: which DeliveryError class to raise, and our own words for why.
Classification = tuple[type[DeliveryError], str]


def status_outcome(status: int, overrides: Mapping[int, Classification] | None = None) -> Classification:
    """The outcome of an error status alone: ``overrides`` first, then the status class."""
    if overrides and status in overrides:
        return overrides[status]
    if status in TEMPORARY_STATUSES or status >= 500:
        return TemporaryError, f"HTTP {status}: the provider is unavailable or rate limiting"
    if 300 <= status < 400:
        return PermanentError, f"HTTP {status}: redirects are not followed"
    return PermanentError, f"HTTP {status}: the provider refused the request"


def http_error(
    provider: str,
    status: int,
    *,
    outcome: Classification | None = None,
    code: Any = None,
    status_outcomes: Mapping[int, Classification] | None = None,
    retry_after: float | None = None,
) -> DeliveryError:
    """The error to raise for a provider's error answer (returned, so you write ``raise http_error(...)``).

    ``outcome`` is what your own table says about the provider's error ``code`` (None when the code is
    absent or unknown: the status decides, through ``status_outcomes`` then the status class).
    ``retry_after`` (seconds, see :func:`parse_retry_after`) is kept only on a temporary outcome.
    """
    error_class, reason = outcome or status_outcome(status, status_outcomes)
    summary: dict[str, Any] = {"status": status}
    if code is not None:
        summary["error_code"] = code
    summary["reason"] = reason
    shown = f" (error code {code})" if code is not None else ""
    message = f"{provider}: HTTP {status}{shown}: {reason}"
    if error_class is TemporaryError:
        if retry_after is not None:
            summary["retry_after"] = retry_after
            message += f"; retry after {retry_after:g}s"
        return TemporaryError(message, retry_after=retry_after, response=summary)
    return error_class(message, response=summary)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns None when the header is absent or unreadable, and never a negative number.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
