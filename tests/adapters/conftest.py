"""Fixtures of the adapter tests: the local servers live in :mod:`tests.adapters.servers`."""

from tests.adapters.servers import http_server, smtp_server

__all__ = ["http_server", "smtp_server"]
