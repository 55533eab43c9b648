"""The package's public surface: complete, lazy, and free of work at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import chimeway


def test_all_lists_every_exported_name():
    assert set(chimeway.__all__) == set(chimeway._EXPORTS) | set(chimeway._SUBMODULES) | {"__version__"}


def test_every_public_name_resolves():
    for name in chimeway.__all__:
        assert getattr(chimeway, name) is not None, name


def test_importing_chimeway_does_not_import_the_dispatch_layer_or_connect():
    code = (
        "import sys, chimeway; "
        "loaded = [m for m in ('dramatiq', 'chimeway.wiring.runtime', 'chimeway_adapters', 'psycopg2') if m in sys.modules]; "
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_an_unknown_attribute_raises_attribute_error():
    try:
        chimeway.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_given_a_delivery_when_reading_suppression_reason_then_it_warns_and_returns_reason():
    from chimeway.models import Delivery

    delivery = Delivery(status="cancelled", reason="retries_exhausted")
    with pytest.warns(DeprecationWarning, match="use Delivery.reason"):
        assert delivery.suppression_reason == "retries_exhausted"
