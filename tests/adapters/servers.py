"""Real local servers for the adapter tests: aiosmtpd for SMTP, and one threaded HTTP server
that speaks each provider's documented request and response shapes.

The HTTP server checks what a real provider checks (path, credentials, required fields) and answers
with the provider's documented body for a scenario the test scripts: ``ok``, ``temporary``,
``rate_limited``, ``permanent``, ``bounced``, ``slow``. Every request is recorded for assertions.
The SMTP handler answers per recipient, as a real server does: ``ok@…`` 250, ``busy@…`` 451,
``unknown@…`` 550 5.1.1, ``nomx@…`` 550 without an enhanced code, ``policy@…`` 550 5.7.1,
``slow@…`` answers after the client has given up; at DATA ``later@…`` 451, ``spam@…`` 554 5.7.1,
``gone@…`` 550 5.1.1.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from standardwebhooks import Webhook

#: the adapters' timeout in these tests: generous, so a loaded machine does not fail the other cases
TEST_TIMEOUT = 5.0
#: the timeout of the cases about timing out
SHORT_TIMEOUT = 0.3
#: how long a "slow" server waits before answering: well past SHORT_TIMEOUT, well under TEST_TIMEOUT
SLOW_SECONDS = 1.5


# -- HTTP -------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int]  # the client's address: the same port twice means a reused connection

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serializable, or bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: seconds between single bytes written: the whole answer ("head") or only its body ("body")
    trickle: float = 0.0
    trickle_from: str = "body"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class Speaker:
    """A provider's side of the conversation: what it checks, and how it answers each scenario."""

    def check(self, request: Recorded) -> Reply | None:
        """A documented error reply when the request is not what the provider accepts, else None."""
        return None

    def reply(self, scenario: str, request: Recorded) -> Reply:
        raise NotImplementedError


class LocalHttpServer:
    """ThreadingHTTPServer on 127.0.0.1:<free port> (HTTPS with ``tls``); every handler thread is joined on close."""

    def __init__(self, speaker: Speaker, tls: ssl.SSLContext | None = None) -> None:
        self.speaker = speaker
        self.requests: list[Recorded] = []
        self.scenarios: list[str] = []
        self.connections = 0  # accepted TCP connections: a refused call must not add one
        self.sent_whole_body: list[bool] = []  # per answer: did the client take every byte?
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    peer=self.client_address,
                )
                reply = server.answer(recorded)
                if reply.delay:
                    server.stopping.wait(reply.delay)
                body = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if body and "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if reply.trickle and reply.trickle_from == "head":
                        head, self._headers_buffer = b"".join(self._headers_buffer) + b"\r\n", []
                        body = head + body
                    else:
                        self.end_headers()
                    if reply.trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            if server.stopping.wait(reply.trickle):
                                return
                    else:
                        self.wfile.write(body)
                    server.sent_whole_body.append(True)
                except (BrokenPipeError, ConnectionResetError):
                    server.sent_whole_body.append(False)  # the client gave up (timeout, size cap)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        class CountingServer(ThreadingHTTPServer):
            def verify_request(self, request: Any, client_address: Any) -> bool:
                with server._lock:
                    server.connections += 1
                return True

        self.httpd = CountingServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False  # joined by server_close(): no thread outlives the test
        self.httpd.block_on_close = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def script(self, *scenarios: str) -> None:
        """The scenarios of the next requests, in order; afterwards every request is ``ok``."""
        with self._lock:
            self.scenarios.extend(scenarios)

    def answer(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            scenario = self.scenarios.pop(0) if self.scenarios else "ok"
        refused = self.speaker.check(request)
        if refused is not None:
            return refused
        if scenario == "slow":
            reply = self.speaker.reply("ok", request)
            reply.delay = SLOW_SECONDS
            return reply
        return self.speaker.reply(scenario, request)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


@pytest.fixture
def http_server() -> Iterator[Callable[[Speaker], LocalHttpServer]]:
    """A factory of local HTTP servers, each closed (and its threads joined) after the test."""
    servers: list[LocalHttpServer] = []

    def start(speaker: Speaker, tls: ssl.SSLContext | None = None) -> LocalHttpServer:
        server = LocalHttpServer(speaker, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def free_port() -> int:
    """A port nothing listens on (bound then released): for connection-refused cases and aiosmtpd."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Providers (documented shapes) -----------------------------------------------------------------


class PostmarkSpeaker(Speaker):
    """Postmark Email API: POST /email, X-Postmark-Server-Token, 200 {MessageID, ErrorCode: 0} or 422 {ErrorCode}."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.message_ids: list[str] = []

    def check(self, request: Recorded) -> Reply | None:
        if request.path != "/email":
            return Reply(404, {"ErrorCode": 404, "Message": "Not found"})
        if request.headers.get("x-postmark-server-token") != self.token:
            return Reply(401, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."})
        body = request.json()
        missing = [k for k in ("From", "To", "Subject") if not body.get(k)]
        if missing or not (body.get("TextBody") or body.get("HtmlBody")):
            return Reply(
                422, {"ErrorCode": 300, "Message": "Provide either email TextBody or HtmlBody or both."}
            )
        return None

    def reply(self, scenario: str, request: Recorded) -> Reply:
        to = request.json()["To"]
        if scenario == "ok":
            message_id = str(uuid.uuid4())
            self.message_ids.append(message_id)
            return Reply(
                200,
                {
                    "To": to,
                    "SubmittedAt": "2026-11-23T09:00:00Z",
                    "MessageID": message_id,
                    "ErrorCode": 0,
                    "Message": "OK",
                },
            )
        if scenario == "temporary":
            return Reply(503, b"Service Unavailable", {"Content-Type": "text/plain"})
        if scenario == "rate_limited":
            return Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}, {"Retry-After": "7"})
        if scenario == "permanent":
            return Reply(422, {"ErrorCode": 412, "Message": "Your account is pending approval."})
        if scenario == "bounced":
            return Reply(
                422,
                {
                    "ErrorCode": 406,
                    "Message": "You tried to send to recipient(s) that have been marked as inactive. "
                    f"Found inactive addresses: {to}. Inactive recipients are ones that have generated "
                    "a hard bounce, a spam complaint, or a manual suppression.",
                },
            )
        if scenario == "invalid_to":
            return Reply(422, {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{to}'."})
        if scenario == "invalid_from":
            return Reply(422, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'nobody'."})
        raise AssertionError(scenario)


class SendgridSpeaker(Speaker):
    """SendGrid v3: POST /v3/mail/send, Bearer key, 202 + X-Message-Id, errors {"errors": [{message, field, help}]}."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.message_ids: list[str] = []

    @staticmethod
    def _errors(*pairs: tuple[str | None, str]) -> dict[str, Any]:
        return {"errors": [{"field": f, "message": m, "help": None} for f, m in pairs]}

    def check(self, request: Recorded) -> Reply | None:
        if request.path != "/v3/mail/send":
            return Reply(404, self._errors((None, "not found")))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(
                401, self._errors((None, "The provided authorization grant is invalid, expired, or revoked"))
            )
        body = request.json()
        try:
            assert body["personalizations"][0]["to"][0]["email"]
            assert body["from"]["email"]
            assert body["content"] and all(c["type"] and c["value"] for c in body["content"])
        except (KeyError, IndexError, TypeError, AssertionError):
            return Reply(400, self._errors(("personalizations", "The personalizations field is required.")))
        return None

    def reply(self, scenario: str, request: Recorded) -> Reply:
        if scenario == "ok":
            message_id = secrets.token_urlsafe(16)
            self.message_ids.append(message_id)
            return Reply(202, None, {"X-Message-Id": message_id})
        if scenario == "temporary":
            return Reply(500, self._errors((None, "Internal server error")))
        if scenario == "rate_limited":
            return Reply(429, self._errors((None, "too many requests")), {"Retry-After": "7"})
        if scenario == "rate_limited_reset":
            reset = int(time.time()) + 30
            return Reply(429, self._errors((None, "too many requests")), {"X-RateLimit-Reset": str(reset)})
        if scenario == "permanent":
            return Reply(
                403, self._errors(("from", "The from address does not match a verified Sender Identity."))
            )
        if scenario == "bounced":
            return Reply(
                400, self._errors(("personalizations.0.to.0.email", "Does not contain a valid address."))
            )
        if scenario == "bad_request":
            return Reply(400, self._errors(("subject", "The subject is required.")))
        raise AssertionError(scenario)


class TwilioSpeaker(Speaker):
    """Twilio Messages: form POST, basic auth, 201 {sid, status}, errors {code, message, more_info, status}."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        #: (user, password) pairs Twilio accepts: the account's auth token, and any API keys added
        self.credentials = {(account_sid, auth_token)}
        self.message_ids: list[str] = []

    @staticmethod
    def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return Reply(status, body, headers or {})

    def check(self, request: Recorded) -> Reply | None:
        if request.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return self._error(404, 20404, "The requested resource was not found")
        accepted = {
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            for user, password in self.credentials
        }
        if request.headers.get("authorization") not in accepted:
            return self._error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self._error(400, 20001, "Content-Type must be form-encoded")
        form = request.form()
        if not form.get("To"):
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not (form.get("Body") or form.get("MediaUrl")):
            return self._error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(400, 21603, "A 'From' phone number is required.")
        return None

    def _message(self, request: Recorded, status: str, error_code: int | None = None) -> dict[str, Any]:
        form = request.form()
        sid = "SM" + uuid.uuid4().hex
        self.message_ids.append(sid)
        return {
            "account_sid": self.account_sid,
            "sid": sid,
            "to": form["To"][0],
            "from": (form.get("From") or [None])[0],
            "body": (form.get("Body") or [""])[0],
            "status": status,
            "error_code": error_code,
            "error_message": None,
            "num_segments": "1",
            "direction": "outbound-api",
        }

    def reply(self, scenario: str, request: Recorded) -> Reply:
        to = request.form()["To"][0]
        if scenario == "ok":
            return Reply(201, self._message(request, "queued"))
        if scenario == "created_failed":
            return Reply(201, self._message(request, "failed", 30005))
        if scenario == "temporary":
            return self._error(503, 20503, "Service unavailable")
        if scenario == "rate_limited":
            return self._error(429, 20429, "Too Many Requests", {"Retry-After": "7"})
        if scenario == "permanent":
            return self._error(
                400,
                21408,
                f"Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}",
            )
        if scenario == "bounced":
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if scenario == "unsubscribed":
            return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
        raise AssertionError(scenario)


class WebhookReceiver(Speaker):
    """A Standard Webhooks receiver: verifies the signature (401 when it fails), answers by scenario."""

    def __init__(self, secret: str) -> None:
        self.verifier = Webhook(secret)
        self.verified: list[Any] = []

    def check(self, request: Recorded) -> Reply | None:
        try:
            self.verified.append(self.verifier.verify(request.body, request.headers))
        except Exception:
            return Reply(401, {"error": "invalid signature"})
        return None

    def reply(self, scenario: str, request: Recorded) -> Reply:
        replies = {
            "ok": Reply(204),
            "temporary": Reply(503, {"error": "unavailable"}),
            "rate_limited": Reply(429, {"error": "slow down"}, {"Retry-After": "7"}),
            "rate_limited_date": Reply(429, None, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),
            "request_timeout": Reply(408),
            "permanent": Reply(400, {"error": "bad payload"}),
            "bounced": Reply(410, {"error": "gone"}),
            "redirect": Reply(307, None, {"Location": "http://127.0.0.1:1/elsewhere"}),
        }
        return replies[scenario]


# -- SMTP ------------------------------------------------------------------------------------------


class ScriptedSmtpHandler:
    """Answers RCPT TO per recipient local part, as a real server decides per mailbox."""

    RCPT_REPLIES = {
        "busy": "451 4.3.0 <{address}> mailbox busy, try again later",
        "unknown": "550 5.1.1 <{address}> user unknown",
        "nomx": "550 <{address}> no such user here",
        "policy": "550 5.7.1 <{address}> relaying denied",
        "full": "552 5.2.2 <{address}> mailbox full",
    }

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.encrypted: list[bool] = []  # per accepted message: did it arrive over TLS?

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:  # noqa: N802
        local = address.partition("@")[0]
        if local == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if local in self.RCPT_REPLIES:
            return self.RCPT_REPLIES[local].format(address=address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if any(rcpt.startswith("spam@") for rcpt in envelope.rcpt_tos):
            return "554 5.7.1 message refused as spam"
        if any(rcpt.startswith("later@") for rcpt in envelope.rcpt_tos):
            return "451 4.7.1 greylisted, try again later"
        if any(
            rcpt.startswith("gone@") for rcpt in envelope.rcpt_tos
        ):  # a server checking mailboxes after DATA
            return "550 5.1.1 mailbox unavailable"
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        # STARTTLS sets session.ssl; implicit TLS shows on the transport.
        self.encrypted.append(
            session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        )
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 2.0.0 message accepted"


@dataclass
class LocalSmtpServer:
    handler: ScriptedSmtpHandler
    host: str
    port: int
    logins: list[tuple[str, str]]


@dataclass
class Certificates:
    """A private CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)

    def build(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("Chimeway Test CA", ca_key, "Chimeway Test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", server_key, "Chimeway Test CA", ca_key, ca=False)
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def smtp_server(certificates: Certificates) -> Iterator[Callable[..., LocalSmtpServer]]:
    """A factory of aiosmtpd servers on 127.0.0.1, stopped after the test.

    ``login`` requires that user and password; ``tls="starttls"`` offers and requires STARTTLS,
    ``tls="ssl"`` speaks implicit TLS; both with a certificate from :func:`certificates`.
    """
    controllers: list[Controller] = []

    def start(*, login: tuple[str, str] | None = None, tls: str | None = None) -> LocalSmtpServer:
        handler = ScriptedSmtpHandler()
        logins: list[tuple[str, str]] = []

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == login
            if ok:
                logins.append(login)  # type: ignore[arg-type]
            return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535 itself

        extra: dict[str, Any] = {}
        if login is not None:
            # aiosmtpd counts only STARTTLS as TLS for AUTH; an implicit-TLS server is TLS from the start.
            extra.update(authenticator=authenticator, auth_require_tls=tls == "starttls")
        if tls == "starttls":
            extra.update(tls_context=certificates.server_context(), require_starttls=True)
        elif tls == "ssl":
            extra.update(ssl_context=certificates.server_context())
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **extra)
        controller.start()
        controllers.append(controller)
        return LocalSmtpServer(handler=handler, host="127.0.0.1", port=port, logins=logins)

    yield start
    for controller in controllers:
        controller.stop()
