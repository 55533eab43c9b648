"""New ids are UUIDv7: time-ordered, so inserts land at the right-hand edge of every id index."""

from __future__ import annotations

import uuid

from chimeway.models import new_id


def test_new_ids_are_version_7_and_sort_in_the_order_they_were_made():
    made = [new_id() for _ in range(2000)]
    assert {uuid.UUID(value).version for value in made} == {7}
    assert made == sorted(made)  # same millisecond included: the library keeps them monotonic
    assert len(set(made)) == len(made)
