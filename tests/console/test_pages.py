"""The console's pages and actions, called as a WSGI server would: auth, CSRF, read-only, tenancy."""

from __future__ import annotations

import pytest

import chimeway
from chimeway.ops import operator_record
from chimeway.testing import drain


def _exhausted(runtime, recipient="ada@example.com", tenant_id="default"):
    delivery = chimeway.send("email", recipient, {"fake_outcomes": ["temporary"], "text": "secret body"},
                             max_attempts=1, adapter="fake", tenant_id=tenant_id)
    drain(runtime)
    assert chimeway.get_delivery(delivery.id).reason == "retries_exhausted"
    return delivery


def test_given_no_credentials_then_every_page_asks_for_them(client):
    client.auth = None
    for path in ("/", "/deliveries", "/orphans", "/static/console.css"):
        reply = client.get(path)
        assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Basic")
    client.auth = ("ops", "wrong")
    assert client.get("/").status == 401
    client.auth = ("other", "s3cret-pass")
    assert client.get("/").status == 401


def test_given_a_user_then_pages_render_with_a_content_security_policy(runtime, worker, client):
    delivery = _exhausted(runtime)
    for path in ("/", "/deliveries", "/orphans", f"/deliveries/{delivery.id}"):
        reply = client.get(path)
        assert reply.status == 200, (path, reply.text)
        assert "script-src" not in reply.headers["Content-Security-Policy"]
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    page = client.get(f"/deliveries/{delivery.id}").text
    assert "retries_exhausted" in page and "secret body" not in page  # the payload is redacted
    assert client.get("/deliveries/00000000-0000-0000-0000-000000000000").status == 404


def test_given_a_search_by_recipient_then_only_that_recipient_is_listed(runtime, worker, client):
    ada = _exhausted(runtime, "ada@example.com")
    bob = _exhausted(runtime, "bob@example.com")
    page = client.get("/deliveries", "q=ada%40example.com&in=recipient").text
    assert ada.id in page and bob.id not in page
    assert ada.id in client.get("/deliveries", f"q={ada.notification_id}&in=notification").text
    assert ada.id not in client.get("/deliveries", "q=not-a-uuid&in=notification").text
    assert client.get("/deliveries", "after=garbage").status == 400


def test_given_more_than_a_page_then_keyset_pages_cover_every_delivery_once(runtime, client):
    from chimeway.console import queries

    sent = {chimeway.send("email", f"r{i}@example.com", {}, adapter="fake").id for i in range(7)}
    seen, cursor = [], None
    while True:
        page = queries.deliveries(tenant=None, filters={}, cursor=cursor, limit=3)
        seen += [d.id for d in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(sent)


def test_given_the_redrive_button_then_it_redrives_and_records_the_console_user(runtime, worker, client):
    delivery = _exhausted(runtime)
    page = client.get(f"/deliveries/{delivery.id}")
    reply = client.post(f"/deliveries/{delivery.id}/redrive", {"csrf": page.csrf(), "why": "outage over"})
    assert reply.status == 303 and reply.headers["Location"].endswith("?done=redriven")
    [action] = operator_record.for_delivery(delivery.id)
    assert (action.actor, action.reason) == ("console:ops", "outage over")
    assert "Redriven" in client.get(f"/deliveries/{delivery.id}", "done=redriven").text
    pending = chimeway.send("email", "ada@example.com", {}, adapter="fake")
    refused = client.post(f"/deliveries/{pending.id}/redrive", {"csrf": page.csrf()})
    assert refused.status == 409 and "nothing was changed" in refused.text


def test_given_a_post_without_the_csrf_token_then_it_is_refused_and_nothing_changes(runtime, worker, client):
    delivery = _exhausted(runtime)
    client.get("/")  # the browser holds the cookie
    assert client.post(f"/deliveries/{delivery.id}/redrive", {}).status == 403
    assert client.post(f"/deliveries/{delivery.id}/redrive", {"csrf": "forged"}).status == 403
    client.cookies.clear()  # a cross-site form: the token it carries matches no cookie
    assert client.post(f"/deliveries/{delivery.id}/redrive", {"csrf": "forged"}).status == 403
    assert chimeway.get_delivery(delivery.id).status == "cancelled"
    assert operator_record.for_delivery(delivery.id) == []


def test_given_the_cancel_button_then_a_pending_delivery_is_cancelled_and_recorded(runtime, client):
    delivery = chimeway.send("email", "ada@example.com", {}, adapter="fake")
    token = client.get(f"/deliveries/{delivery.id}").csrf()
    reply = client.post(f"/deliveries/{delivery.id}/cancel", {"csrf": token, "why": "duplicate"})
    assert reply.status == 303
    assert chimeway.get_delivery(delivery.id).reason == "cancelled_by_user"
    [action] = operator_record.for_delivery(delivery.id)
    assert (action.action, action.actor) == ("cancel", "console:ops")
    assert "by console:ops (duplicate)" in client.get(f"/deliveries/{delivery.id}").text


@pytest.mark.parametrize("settings", [{"console_user": "ops", "console_password": "s3cret-pass",
                                       "console_read_only": True}])
def test_given_a_read_only_console_then_actions_are_hidden_and_refused(runtime, worker, client, settings):
    delivery = _exhausted(runtime)
    page = client.get(f"/deliveries/{delivery.id}")
    assert "Redrive" not in page.text and 'name="csrf"' not in page.text
    client.get("/")
    token = client.cookies["chimeway_console_csrf"]
    assert client.post(f"/deliveries/{delivery.id}/redrive", {"csrf": token}).status == 403
    assert chimeway.get_delivery(delivery.id).status == "cancelled"


@pytest.mark.parametrize("settings", [{"console_user": "ops", "console_password": "s3cret-pass",
                                       "console_tenant": "acme"}])
def test_given_a_console_pinned_to_a_tenant_then_other_tenants_are_invisible(runtime, worker, client, settings):
    mine = _exhausted(runtime, "ada@acme.example", tenant_id="acme")
    theirs = _exhausted(runtime, "ada@other.example", tenant_id="other")
    listing = client.get("/deliveries", "tenant=other").text
    assert mine.id in listing and theirs.id not in listing
    assert client.get(f"/deliveries/{theirs.id}").status == 404
    token = client.get(f"/deliveries/{mine.id}").csrf()
    assert client.post(f"/deliveries/{theirs.id}/redrive", {"csrf": token}).status == 404
    assert chimeway.get_delivery(theirs.id).status == "cancelled"
    overview = client.get("/").text
    assert ">1<" in overview.replace(" ", "")  # one delivery counted: acme's


def test_given_a_prefix_then_links_and_redirects_stay_under_it(runtime, worker, client):
    delivery = _exhausted(runtime)
    client.prefix = "/ops/chimeway"
    page = client.get(f"/deliveries/{delivery.id}")
    assert 'href="/ops/chimeway/static/console.css"' in page.text
    reply = client.post(f"/deliveries/{delivery.id}/redrive", {"csrf": page.csrf()})
    assert reply.headers["Location"].startswith("/ops/chimeway/deliveries/")


def test_given_no_credentials_configured_then_the_app_refuses_to_build(database_url):
    from chimeway.console import make_app
    from chimeway.errors import ConfigurationError

    runtime = chimeway.configure(database_url=database_url, redis_url="", environ={})
    try:
        with pytest.raises(ConfigurationError, match="CHIMEWAY_CONSOLE_USER and CHIMEWAY_CONSOLE_PASSWORD"):
            make_app(runtime)
    finally:
        from chimeway.wiring import runtime as runtime_mod

        runtime_mod.reset()


def test_given_jinja2_is_not_installed_then_the_console_names_the_extra_to_install(runtime, monkeypatch):
    import sys

    from chimeway.console import make_app
    from chimeway.errors import ConfigurationError

    monkeypatch.setitem(sys.modules, "jinja2", None)  # what an installation without the extra looks like
    with pytest.raises(ConfigurationError, match=r"pip install 'chimeway\[console\]'"):
        make_app(runtime)


def test_given_an_open_circuit_then_the_overview_shows_it(database_url):
    from chimeway.console import make_app
    from chimeway.testing import start_worker
    from chimeway.wiring import runtime as runtime_mod
    from tests.console.conftest import PASSWORD, USER, Client

    runtime = runtime_mod.configure(database_url=database_url, redis_url="", environ={}, default_adapter="fake",
                                    circuit_failures=1, circuit_open_seconds=3600, console_user=USER,
                                    console_password=PASSWORD)
    try:
        chimeway.send("email", "ann@example.com", {"fake_outcomes": ["temporary"]}, max_attempts=1)
        with start_worker(runtime):
            assert drain(runtime) == []
        page = Client(make_app(runtime)).get("/").text
        assert '<span class="circuit open">open</span>' in page and "<td>fake</td>" in page
    finally:
        runtime_mod.reset()
