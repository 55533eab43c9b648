"""``log``: writes that a delivery was sent to the log and succeeds. For development and demos."""

from __future__ import annotations

import logging
import uuid

from chimeway.adapter import Adapter, SendRequest, SendResult

logger = logging.getLogger("chimeway.adapters.log")


class LogAdapter(Adapter):
    name = "log"
    channel = "any"

    def send(self, request: SendRequest) -> SendResult:
        # The recipient and payload stay out of the log on purpose: logs are not for personal data.
        logger.info(
            "delivered %s on %s (attempt %d)", request.delivery_id, request.channel, request.attempt_number
        )
        return SendResult(provider="log", provider_message_id=f"log-{uuid.uuid4()}")
