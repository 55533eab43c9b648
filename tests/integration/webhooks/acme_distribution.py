"""``acme-chimeway``: a third-party package shipping an adapter and its webhook provider together.

The README's worked example, as files: :func:`write_acme_source` writes the project (a
``pyproject.toml`` with both entry-point groups and the ``acme_chimeway`` package); the tests
``pip install`` it into a temporary directory and put that on ``sys.path``. The adapter's
``SendResult.provider`` is ``"acme"``, the webhook provider's name, so events link to the delivery.
The webhook secret comes from ``ACME_WEBHOOK_SECRET`` (a third-party provider cannot add a
``CHIMEWAY_*`` setting).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PYPROJECT = textwrap.dedent(
    """\
    [build-system]
    requires = ["setuptools>=61"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "acme-chimeway"
    version = "1.0"
    dependencies = ["chimeway"]

    [project.entry-points."chimeway.adapters"]
    acme = "acme_chimeway:AcmeAdapter"

    [project.entry-points."chimeway.webhook_providers"]
    acme = "acme_chimeway:AcmeWebhooks"
    """
)

PACKAGE = textwrap.dedent(
    '''\
    """Acme SMS for Chimeway: the adapter sends, the webhook provider reads Acme's delivery reports."""
    import hashlib
    import hmac
    import os

    from chimeway.adapter import Adapter, Option, PermanentError, SendResult
    from chimeway.states import EventType, RejectReason
    from chimeway.webhooks.providers.base import NormalizedEvent, NotConfigured, Provider, Unauthorized, parse_iso, unknown

    SENT = []  # what the stand-in for Acme's API accepted


    class AcmeAdapter(Adapter):
        name = "acme"
        channel = "sms"
        options = {"api_key": Option(required=True, secret=True)}

        def send(self, request):
            if not request.payload.get("body"):
                raise PermanentError("an SMS needs a body")
            SENT.append((request.recipient, request.payload["body"]))
            # provider= is the webhook provider's name: events link on (tenant, provider, message id)
            return SendResult(provider="acme", provider_message_id=f"acme-{len(SENT)}")


    #: Acme's report status -> (ledger type, reject reason); any other status is kept as unknown
    STATUSES = {
        "delivered": (EventType.DELIVERED, None),
        "undeliverable": (EventType.BOUNCED, RejectReason.BOUNCED),  # a hard bounce: suppresses the number
    }


    class AcmeWebhooks(Provider):
        name = "acme"

        def verify(self, request):
            secret = os.environ.get("ACME_WEBHOOK_SECRET")
            if not secret:
                raise NotConfigured("acme webhooks are not configured: set ACME_WEBHOOK_SECRET")
            expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, request.header("Acme-Signature") or ""):
                raise Unauthorized("signature mismatch")

        def normalize(self, raw, request):
            occurred_at = parse_iso(raw.get("at")) or request.received_at
            fields = {"message_id": raw.get("message_id"), "event_id": raw.get("report_id")}
            if raw.get("status") not in STATUSES:
                return unknown(raw.get("status"), raw, occurred_at, **fields)
            event_type, reason = STATUSES[raw["status"]]
            return NormalizedEvent(type=event_type, occurred_at=occurred_at, reject_reason=reason, **fields)
    '''
)


def write_acme_source(directory: Path) -> Path:
    """The project's source tree under ``directory``; returns its root."""
    root = directory / "acme-chimeway"
    (root / "acme_chimeway").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "acme_chimeway" / "__init__.py").write_text(PACKAGE)
    return root


def pip_install(source: Path, target: Path) -> None:
    """``pip install`` the project into ``target`` (offline: setuptools from this environment)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
