"""The console's WSGI application: routing, HTTP Basic auth, CSRF, read-only mode, tenancy, headers.

Pages are server-rendered (Jinja2, autoescaped) with one hand-written stylesheet and no script, so
the Content-Security-Policy can forbid scripts outright. Actions are POSTs carrying a CSRF token
that must match the console's cookie (double submit: nothing shared between processes), and call
the library's API (:func:`chimeway.redrive`, the operator cancel), which writes the operator
record. Nothing here logs a recipient, a payload or a query string.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.cookies import SimpleCookie
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlencode

from chimeway.console import queries
from chimeway.errors import ConfigurationError, DeliveryNotFound, NotRedrivableError
from chimeway.wiring.runtime_type import Runtime

#: Scripts, frames, plugins and foreign origins are refused; styles and forms stay on this origin.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
CSRF_COOKIE = "chimeway_console_csrf"
_DELIVERY = re.compile(r"/deliveries/([0-9a-fA-F-]{36})(/redrive|/cancel)?")
_MISSING_CREDENTIALS = (
    "the console needs CHIMEWAY_CONSOLE_USER and CHIMEWAY_CONSOLE_PASSWORD (or `chimeway console --no-auth` "
    "on a loopback --host)"
)


class Response:
    def __init__(self, status: int, body: str = "", *, content_type: str = "text/html; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = list(headers or [])


class Console:
    """One console over a configured runtime. ``auth=False`` only for ``chimeway console --no-auth``."""

    def __init__(self, runtime: Runtime, *, auth: bool = True) -> None:
        try:
            import jinja2
        except ImportError as err:
            raise ConfigurationError(
                "the console needs Jinja2: pip install 'chimeway[console]'", variable=None
            ) from err
        settings = runtime.settings
        if auth and not (settings.console_user and settings.console_password):
            raise ConfigurationError(_MISSING_CREDENTIALS, variable="CHIMEWAY_CONSOLE_USER")
        self.runtime = runtime
        self.auth = auth
        self.read_only = settings.console_read_only
        self.tenant = settings.console_tenant
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("chimeway.console", "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.stylesheet = files("chimeway.console").joinpath("static/console.css").read_text(encoding="utf-8")

    # --- WSGI --------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            response = self.handle(environ)
        finally:
            database = self.runtime.database
            if not database.in_transaction() and not database.is_closed():
                database.close()  # hand the thread's connection back to the pool after each request
        payload = response.body.encode("utf-8")
        headers = [
            ("Content-Type", response.content_type), ("Content-Length", str(len(payload))),
            ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"), ("Cache-Control", "no-store"), *response.headers,
        ]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [payload]

    def handle(self, environ: dict[str, Any]) -> Response:
        user = self._authenticate(environ)
        if user is None:
            return Response(401, "authentication required\n", content_type="text/plain; charset=utf-8",
                            headers=[("WWW-Authenticate", 'Basic realm="chimeway console", charset="UTF-8"')])
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        request = Request(environ, user)
        if path == "/static/console.css":
            return Response(200, self.stylesheet, content_type="text/css; charset=utf-8")
        match = _DELIVERY.fullmatch(path)
        if method == "POST":
            if match is None or match.group(2) is None:
                return self._error(request, 405, "this page takes no action")
            return self._act(request, match.group(1), match.group(2)[1:])
        if method not in ("GET", "HEAD"):
            return self._error(request, 405, "method not allowed")
        if path == "/":
            return self._page(request, "overview.html", overview=queries.overview(self.runtime, self.tenant))
        if path == "/deliveries":
            return self._list(request)
        if path == "/orphans":
            return self._page(request, "orphans.html", orphans=queries.orphans(self.tenant))
        if match is not None and match.group(2) is None:
            return self._detail(request, match.group(1))
        return self._error(request, 404, "no such page")

    # --- auth and CSRF -----------------------------------------------------------------------------

    def _authenticate(self, environ: dict[str, Any]) -> str | None:
        if not self.auth:
            return "anonymous"
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        settings = self.runtime.settings
        # Both compared in constant time, and both always compared: no early exit tells which was wrong.
        good_user = hmac.compare_digest(user.encode(), settings.console_user.encode())
        good_password = hmac.compare_digest(password.encode(), settings.console_password.encode())
        return user if sep and good_user and good_password else None

    # --- pages -------------------------------------------------------------------------------------

    def _page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        token, headers = request.csrf_token()
        body = self.templates.get_template(template).render(
            prefix=request.prefix, user=request.user, read_only=self.read_only, tenant=self.tenant,
            csrf=token, query=request.query, **context,
        )
        return Response(status, body, headers=headers)

    def _error(self, request: Request, status: int, message: str) -> Response:
        return self._page(request, "error.html", status, status_code=status, message=message)

    def _list(self, request: Request) -> Response:
        q = request.query
        filters = {name: q.get(name, "") for name in queries.FILTERS}
        try:
            page = queries.deliveries(
                tenant=self.tenant, filters=filters, field=q.get("in"), query=q.get("q", "").strip() or None,
                cursor=q.get("after") or None,
            )
        except ValueError:
            return self._error(request, 400, "bad page cursor")
        next_link = None
        if page.next_cursor:
            next_link = "?" + urlencode({**{k: v for k, v in q.items() if k != "after" and v}, "after": page.next_cursor})
        return self._page(request, "deliveries.html", page=page, filters=filters, next_link=next_link,
                          search_fields=queries.SEARCH_FIELDS)

    def _detail(self, request: Request, delivery_id: str) -> Response:
        from chimeway.ops.history import timeline
        from chimeway.store.deliveries import get_delivery

        try:
            delivery = get_delivery(delivery_id, self.tenant)
            entries = timeline(delivery.id, tenant_id=self.tenant)
        except DeliveryNotFound:
            return self._error(request, 404, "no such delivery")
        return self._page(
            request, "delivery.html", delivery=delivery, entries=entries, notice=request.query.get("done"),
            payload=json.dumps(queries.redact(delivery.payload), indent=2, ensure_ascii=False),
            metadata=json.dumps(queries.redact(delivery.metadata), indent=2, ensure_ascii=False),
        )

    # --- actions -----------------------------------------------------------------------------------

    def _act(self, request: Request, delivery_id: str, action: str) -> Response:
        if self.read_only:
            return self._error(request, 403, "this console is read-only (CHIMEWAY_CONSOLE_READ_ONLY)")
        form = request.form()
        if not request.csrf_valid(form.get("csrf", "")):
            return self._error(request, 403, "the form has expired or did not come from this console: reload the page")
        from chimeway.ops.operations import cancel_by_operator, redrive

        actor, why = f"console:{request.user}", form.get("why", "").strip() or None
        try:
            if action == "redrive":
                redrive(delivery_id, tenant_id=self.tenant, actor=actor, why=why, runtime=self.runtime)
                done = "redriven"
            else:
                done = "cancelled" if cancel_by_operator(delivery_id, actor=actor, why=why, tenant_id=self.tenant) \
                    else "not-cancelled"
        except DeliveryNotFound:
            return self._error(request, 404, "no such delivery")
        except NotRedrivableError as err:
            return self._error(request, 409, str(err))
        location = f"{request.prefix}/deliveries/{delivery_id}?done={done}"
        return Response(303, "", headers=[("Location", location)])


class Request:
    """What the console reads from a WSGI environ."""

    def __init__(self, environ: dict[str, Any], user: str) -> None:
        self.environ = environ
        self.user = user
        self.prefix = environ.get("SCRIPT_NAME", "").rstrip("/")
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.query = {key: values[0] for key, values in parsed.items()}
        cookie = SimpleCookie()
        try:
            cookie.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
            pass
        morsel = cookie.get(CSRF_COOKIE)
        self.cookie_token = morsel.value if morsel else None

    def csrf_token(self) -> tuple[str, list[tuple[str, str]]]:
        """The token forms carry, and a Set-Cookie header when the browser has none yet."""
        if self.cookie_token:
            return self.cookie_token, []
        token = secrets.token_urlsafe(32)
        path = self.prefix or "/"
        return token, [("Set-Cookie", f"{CSRF_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict")]

    def csrf_valid(self, submitted: str) -> bool:
        return bool(self.cookie_token) and hmac.compare_digest(submitted.encode(), self.cookie_token.encode())

    def form(self) -> dict[str, str]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = self.environ["wsgi.input"].read(min(max(length, 0), 65_536)) if length > 0 else b""
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}
