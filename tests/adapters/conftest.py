"""Fixtures of the adapter tests: the local servers live in :mod:`tests.adapters.servers`."""

from tests.adapters.servers import certificates, http_server, smtp_server

__all__ = ["certificates", "http_server", "smtp_server"]
