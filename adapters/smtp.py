"""``smtp``: email through any SMTP server, with the standard library's smtplib.

Recipient: the email address. Payload (the common email shape)::

    {"subject": "…", "text": "plain body", "html": "<p>html body</p>",   # text and/or html
     "from": "Name <sender@example.com>",   # optional: else the ``from`` option
     "headers": {"Reply-To": "…"}}         # optional extra message headers

Options (``configure(adapters={"smtp": {...}})`` or ``CHIMEWAY_SMTP_<OPTION>``):

========  =================================================  ===================================
option    meaning                                            default
========  =================================================  ===================================
host      server host name                                   ``localhost``
port      server port                                        465 with ``ssl``, 587 with
                                                             ``starttls``, else 25
username  login user (AUTH is used only when set)            none
password  login password (secret)                            none
starttls  upgrade the connection with STARTTLS               false
ssl       connect with implicit TLS (SMTPS)                  false
timeout   seconds for the connection and each reply          10
from      default sender when the payload has no ``from``    none
provider  provider name recorded with the message id         ``smtp``
========  =================================================  ===================================

Each send opens its own connection (smtplib connections are not thread-safe) and closes it. TLS
(``ssl`` or ``starttls``) verifies the server's certificate and host name against the system's
trusted CAs; to trust a private CA, point OpenSSL's ``SSL_CERT_FILE`` at it.

Provider message id: Chimeway writes the ``Message-ID`` header itself as
``<chimeway.{delivery_id}@{sender's domain}>`` — the same on every attempt of a delivery, so a
retry after a lost reply is recognizable downstream — and stores it as written, angle brackets
included (the form Chimeway's Mailgun webhook normalizer produces). The attempt's provider is
``smtp``, or the ``provider`` option: relaying through Mailgun's SMTP with ``provider=mailgun``
lets Mailgun's webhooks find the delivery by (provider, message id).

Outcomes, from the SMTP reply code (RFC 5321) and enhanced status code (RFC 3463):

- 4xx anywhere, connection refused or dropped, timeouts → temporary;
- 5xx at RCPT TO with enhanced status 5.1.x (bad mailbox, domain or address) or 5.2.1 (mailbox
  disabled), or without an enhanced status 550/551/553 → bounced: the recipient does not exist;
- 5xx with any other enhanced status (5.7.1 relaying denied, policy), and every other 5xx (sender
  refused, DATA refused, failed AUTH) → permanent; a 5xx at DATA with 5.1.x is bounced too, for
  servers that check recipients after the message;
- a missing STARTTLS or AUTH extension, or a TLS certificate that does not verify → permanent.

The ``response`` kept on the attempt holds the reply code, the enhanced status code and the SMTP
stage, never the server's text, which often repeats the address.
"""

from __future__ import annotations

import email.utils
import re
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, ClassVar

from chimeway.adapter import (
    Adapter,
    BouncedError,
    DeliveryError,
    Option,
    PermanentError,
    SendRequest,
    SendResult,
    TemporaryError,
    parse_flag,
)
from chimeway.errors import ConfigurationError

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_BOUNCE_CODES_WITHOUT_ENHANCED = frozenset({550, 551, 553})
#: the extension a stage needs, for the error when the server lacks it
_EXTENSION_NEEDED = {"tls": "STARTTLS", "auth": "AUTH", "mail": "SMTPUTF8 (needed for a non-ASCII address)"}


def _port(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError
    return port


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    seconds = float(value)
    if not seconds > 0:
        raise ValueError
    return seconds


class SmtpAdapter(Adapter):
    name = "smtp"
    channel = "email"
    options: ClassVar[dict[str, Option]] = {
        "host": Option(default="localhost", doc="expected the SMTP server's host name"),
        "port": Option(default=None, parse=_port, doc="expected a port number from 1 to 65535"),
        "username": Option(doc="expected the SMTP login user"),
        "password": Option(secret=True, doc="expected the SMTP login password"),
        "starttls": Option(default=False, parse=parse_flag, doc="expected true or false"),
        "ssl": Option(default=False, parse=parse_flag, doc="expected true or false"),
        "timeout": Option(default=10.0, parse=_seconds, doc="expected a number of seconds greater than 0"),
        "from": Option(doc="expected a sender address"),
        "provider": Option(default="smtp", doc="expected the provider name webhooks report (e.g. mailgun)"),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if options.get("ssl") and options.get("starttls"):
            raise ConfigurationError(
                "smtp: set either CHIMEWAY_SMTP_SSL (implicit TLS) or CHIMEWAY_SMTP_STARTTLS, not both",
                variable="CHIMEWAY_SMTP_SSL",
            )
        self.host = options.get("host") or "localhost"
        self.port = options.get("port") or (
            465 if options.get("ssl") else 587 if options.get("starttls") else 25
        )
        self.timeout = float(options.get("timeout") or 10.0)

    # -- building the message --------------------------------------------------------------------

    def build_message(self, request: SendRequest) -> tuple[EmailMessage, str]:
        payload = request.payload
        sender = payload.get("from") or self.config.get("from")
        if not sender:
            raise PermanentError(
                "email payload has no 'from' and the smtp adapter has no 'from' option",
                response={"error": "invalid_payload", "field": "from"},
            )
        text, html = payload.get("text"), payload.get("html")
        if not (text or html):
            raise PermanentError(
                "email payload needs 'text' or 'html'", response={"error": "invalid_payload", "field": "text"}
            )
        _, sender_address = email.utils.parseaddr(str(sender))
        domain = sender_address.rpartition("@")[2] or "chimeway.invalid"
        message_id = f"<chimeway.{request.delivery_id}@{domain}>"
        message = EmailMessage()
        try:
            message["From"] = str(sender)
            message["To"] = request.recipient
            message["Subject"] = str(payload.get("subject") or "")
            message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
            message["Message-ID"] = message_id
            self._add_headers(message, payload.get("headers") or {})
        except (
            TypeError,
            ValueError,
            AttributeError,
        ) as err:  # a line break in a header, headers not a mapping
            raise PermanentError(
                "email payload has a header that cannot be written (a line break, or not text)",
                response={"error": "invalid_payload", "field": "headers"},
            ) from err
        if text:
            message.set_content(str(text))
            if html:
                message.add_alternative(str(html), subtype="html")
        else:
            message.set_content(str(html), subtype="html")
        return message, message_id

    @staticmethod
    def _add_headers(message: EmailMessage, headers: Any) -> None:
        for name, value in headers.items():
            if str(name).lower() in ("message-id", "from", "to", "date"):
                continue  # ours: they carry the matching key and the envelope
            message[str(name)] = str(value)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, request: SendRequest) -> SendResult:
        message, message_id = self.build_message(request)
        _, envelope_from = email.utils.parseaddr(message["From"])
        stage = "connect"
        connection: smtplib.SMTP | None = None
        try:
            connection = self._connect()
            stage = "tls"
            if self.config.get("starttls"):
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            stage = "auth"
            if self.config.get("username"):
                connection.login(self.config["username"], self.config.get("password") or "")
            stage = "mail"
            connection.send_message(message, from_addr=envelope_from, to_addrs=[request.recipient])
        except smtplib.SMTPRecipientsRefused as err:
            code, text = next(iter(err.recipients.values()), (None, b""))
            raise self._classify(code, text, "rcpt") from err
        except smtplib.SMTPSenderRefused as err:
            raise self._classify(err.smtp_code, err.smtp_error, "mail") from err
        except smtplib.SMTPDataError as err:
            raise self._classify(err.smtp_code, err.smtp_error, "data") from err
        except smtplib.SMTPNotSupportedError as err:
            raise PermanentError(
                f"smtp: the server does not support {_EXTENSION_NEEDED.get(stage, stage)}",
                response={"error": "not_supported", "stage": stage},
            ) from err
        except smtplib.SMTPResponseException as err:  # AUTH, HELO, the connect greeting…
            raise self._classify(err.smtp_code, err.smtp_error, stage) from err
        except ssl.SSLCertVerificationError as err:
            raise PermanentError(
                "smtp: the server's TLS certificate does not verify",
                response={"error": "tls", "stage": stage},
            ) from err
        except (smtplib.SMTPException, OSError) as err:  # disconnects, refused, timeouts, TLS failures
            raise TemporaryError(
                f"smtp: {type(err).__name__} during {stage} (connection refused, dropped or timed out)",
                response={"error": "connection", "stage": stage},
            ) from err
        finally:
            if connection is not None:
                self._hang_up(connection, polite=stage == "mail")
        provider = self.config.get("provider") or self.name
        return SendResult(provider=provider, provider_message_id=message_id, response={"smtp_code": 250})

    @staticmethod
    def _hang_up(connection: smtplib.SMTP, *, polite: bool) -> None:
        """QUIT after a conversation that went to the end; just close after a failure or a timeout.

        The message is already accepted when QUIT is sent, so a failing QUIT changes nothing.
        """
        try:
            if polite:
                connection.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            connection.close()

    def _connect(self) -> smtplib.SMTP:
        if self.config.get("ssl"):
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    @staticmethod
    def _classify(code: int | None, text: bytes | str, stage: str) -> DeliveryError:
        """Our error for an SMTP reply. The reply text is read for its enhanced code, never kept."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        match = _ENHANCED.match(text or "")
        enhanced = match.group(1) if match else None
        response: dict[str, Any] = {"smtp_code": code, "stage": stage}
        if enhanced:
            response["enhanced_code"] = enhanced
        described = f"smtp: {code}{' ' + enhanced if enhanced else ''} at {stage}"
        if code is None or code < 500:
            return TemporaryError(f"{described}: the server asks to try again later", response=response)
        recipient_unknown = enhanced is not None and (enhanced.startswith("5.1.") or enhanced == "5.2.1")
        if stage == "rcpt" and enhanced is None:
            recipient_unknown = code in _BOUNCE_CODES_WITHOUT_ENHANCED
        if recipient_unknown and stage in ("rcpt", "data"):
            return BouncedError(
                f"{described}: the recipient does not exist or refuses mail", response=response
            )
        return PermanentError(f"{described}: the server refused the message", response=response)
