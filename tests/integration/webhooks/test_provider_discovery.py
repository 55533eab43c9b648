"""Webhook providers are found through the ``chimeway.webhook_providers`` entry-point group.

A third-party package (``acme-chimeway``, the README's worked example) is pip-installed into a
temporary directory put on ``sys.path``: its adapter sends, its webhook provider answers
``/webhooks/acme``, and a signed report links to the delivery and projects onto it. Clashing names
and objects that are not providers are refused with errors naming the distributions.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import chimeway
import chimeway.webhooks
from chimeway.errors import ConfigurationError
from chimeway.models import Delivery, Event
from chimeway.store.migrator import migrate
from chimeway.testing import drain, start_worker
from chimeway.webhooks.providers import discover, provider_class
from chimeway.wiring.config import load_settings
from chimeway.wiring.runtime import configure, reset
from tests.integration.webhooks.acme_distribution import PACKAGE, PYPROJECT, pip_install, write_acme_source

BUILT_INS = {"postmark": "PostmarkProvider", "sendgrid": "SendgridProvider", "mailgun": "MailgunProvider",
             "standard": "StandardProvider"}
SECRET = "acme-hook-secret-3f9a"
README = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``pip install acme-chimeway`` into a directory of its own (once for the module)."""
    directory = tmp_path_factory.mktemp("acme")
    site = directory / "site"
    pip_install(write_acme_source(directory), site)
    yield site


@pytest.fixture
def acme(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """acme-chimeway importable and discoverable for one test; nothing of it is left afterwards."""
    with _on_path(acme_site, monkeypatch):
        yield acme_site


class _on_path:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory, self.monkeypatch = directory, monkeypatch

    def __enter__(self) -> None:
        self.monkeypatch.syspath_prepend(str(self.directory))
        importlib.invalidate_caches()
        discover.cache_clear()

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()
        for name in [name for name in sys.modules if name.split(".")[0] in _packages(self.directory)]:
            del sys.modules[name]
        importlib.invalidate_caches()
        discover.cache_clear()


def _packages(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir() if path.is_dir() and not path.name.endswith("-info")}


def write_distribution(directory: Path, distribution: str, package: str, entry_points: str, source: str) -> Path:
    """A distribution as pip leaves one (package + ``*.dist-info`` with ``entry_points.txt``)."""
    (directory / package).mkdir(parents=True)
    (directory / package / "__init__.py").write_text(textwrap.dedent(source))
    dist_info = directory / f"{distribution.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return directory


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json",
            "Acme-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_every_built_in_provider_is_an_entry_point_under_chimeway_webhook_providers() -> None:
    found = discover()
    assert {name: [entry.value for entry in entries] for name, entries in found.items() if name in BUILT_INS} == {
        name: [f"chimeway.webhooks.providers.{name}:{cls}"] for name, cls in BUILT_INS.items()
    }
    for name in BUILT_INS:
        assert provider_class(name).name == name


def test_given_acme_installed_with_pip_when_it_sends_and_acme_reports_delivery_then_the_event_links_and_projects(
    acme: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    runtime = configure(
        database_url=pg_url, redis_url="", environ={"CHIMEWAY_ACME_API_KEY": "k-1"},
        channel_adapters={"sms": "acme"},
    )
    try:
        migrate(runtime.database)
        # Given a delivery sent through acme's adapter (found in chimeway.adapters)
        with start_worker(runtime, threads=1):
            sent = chimeway.send("sms", "+15550001", {"body": "Your code is 123456"})
            drain(runtime)
        delivery = chimeway.get_delivery(sent.id)
        assert (delivery.status, delivery.provider, delivery.provider_message_id) == ("succeeded", "acme", "acme-1")

        # When Acme posts a signed delivery report to /webhooks/acme (found in chimeway.webhook_providers)
        body = json.dumps({"report_id": "r-1", "message_id": "acme-1", "status": "delivered",
                           "at": "2026-11-29T10:00:00Z"}).encode()
        assert chimeway.webhooks.handle("acme", signed(body), body) == (200, "ok")
        assert chimeway.webhooks.handle("acme", signed(body, "wrong"), body) == (401, "unauthorized")

        # Then the event is linked to that delivery and projected onto it
        event = Event.get(Event.provider == "acme")
        assert (event.delivery_id, event.type, event.needs_reconciliation) == (sent.id, "delivered", False)
        projected = Delivery.get_by_id(sent.id)
        assert projected.last_event_type == "delivered"
        assert projected.delivered_at is not None
    finally:
        reset()


def test_the_readme_worked_example_is_the_package_these_tests_install() -> None:
    assert PACKAGE in README and PYPROJECT in README


def test_given_acme_installed_then_its_name_is_a_valid_tolerance_without_importing_it(acme: Path) -> None:
    settings = load_settings(environ={"CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS": "acme=60,mailgun=600"})
    assert settings.webhook_tolerance_seconds == {"acme": 60, "mailgun": 600}
    assert "acme_chimeway" not in sys.modules, "validating a provider name imports no provider"


def test_discovering_providers_imports_none_of_them() -> None:
    code = (
        "import sys\n"
        "from chimeway.wiring.config import load_settings\n"
        "load_settings(environ={'CHIMEWAY_WEBHOOK_TOLERANCE_SECONDS': 'sendgrid=60'})\n"
        "from chimeway.webhooks.providers import names\n"
        "assert 'sendgrid' in names()\n"
        "print(sorted(m for m in sys.modules if m.startswith('chimeway.webhooks.providers.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the contract and the names only: no provider's own module
    assert done.stdout.strip() == "['chimeway.webhooks.providers.base', 'chimeway.webhooks.providers.installed']"


def test_given_an_unknown_provider_then_the_endpoint_answers_404(configured: object) -> None:
    assert chimeway.webhooks.handle("carrier-pigeon", {}, b"{}") == (404, "unknown provider")


def test_given_two_distributions_registering_one_provider_name_then_using_it_fails_naming_both(
    acme_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: object,
) -> None:
    other = write_distribution(
        tmp_path, "roadrunner-chimeway", "roadrunner_chimeway",
        "[chimeway.webhook_providers]\nacme = roadrunner_chimeway:Beep\n", "Beep = None\n",
    )
    with _on_path(acme_site, monkeypatch), _on_path(other, monkeypatch):
        with pytest.raises(ConfigurationError) as caught:
            provider_class("acme")
        assert provider_class("postmark").name == "postmark", "only the clashing name fails"
        assert chimeway.webhooks.handle("acme", {}, b"{}") == (500, "provider misconfigured")
    message = str(caught.value)
    assert "'acme'" in message and "acme-chimeway" in message and "roadrunner-chimeway" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("class Hook:\n    name = 'coyote'\n", "does not subclass chimeway.webhooks.providers.base.Provider"),
        ("hook = lambda request: None\n", "does not subclass"),
        ("from chimeway.webhooks.providers.base import Provider\n\nclass Hook(Provider):\n    name = 'wile'\n",
         "has name = 'wile'"),
    ],
)
def test_given_a_registered_object_that_is_not_a_provider_then_using_it_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str,
) -> None:
    attribute = "hook" if "lambda" in source else "Hook"
    directory = write_distribution(
        tmp_path, "coyote-chimeway", "coyote_chimeway",
        f"[chimeway.webhook_providers]\ncoyote = coyote_chimeway:{attribute}\n", source,
    )
    with _on_path(directory, monkeypatch):
        with pytest.raises(ConfigurationError) as caught:
            provider_class("coyote")
    assert expected in str(caught.value) and "coyote-chimeway" in str(caught.value)
