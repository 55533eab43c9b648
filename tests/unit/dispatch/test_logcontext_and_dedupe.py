"""Structured log context, and the in-memory fresh-send dedupe."""

from __future__ import annotations

import logging

import pytest

from chimeway.store.setnx import SetNX
from chimeway.wiring import logcontext


def test_given_a_bound_context_then_records_carry_it_and_the_outer_context_returns_after(caplog):
    caplog.handler.addFilter(logcontext.ContextFilter())
    log = logging.getLogger("chimeway.test")
    with caplog.at_level(logging.INFO, logger="chimeway.test"):
        with logcontext.bind(delivery_id="d-1"):
            logcontext.update(attempt=2, adapter="fake", tenant="acme", recipient="never@example.com")
            log.info("inside")
        log.info("outside")
    inside, outside = caplog.records
    assert (inside.delivery_id, inside.attempt, inside.adapter, inside.tenant) == ("d-1", 2, "fake", "acme")
    assert not hasattr(inside, "recipient")
    assert (outside.delivery_id, outside.attempt) == (None, None)


def test_given_an_unknown_field_when_binding_then_it_is_refused():
    with pytest.raises(ValueError, match="known: delivery_id"), logcontext.bind(recipient="x"):
        pass


def test_given_a_delivery_enqueued_once_then_a_second_fresh_enqueue_is_a_duplicate_until_forgotten():
    dedupe = SetNX()  # in memory, as under the stub broker
    assert dedupe.first("d-1", 60) is True
    assert dedupe.first("d-1", 60) is False
    assert dedupe.first("d-2", 60) is True
    dedupe.forget("d-1")
    assert dedupe.first("d-1", 60) is True
