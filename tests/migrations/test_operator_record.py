"""Migration 0006: the operator record's table matches its model and refuses changes, on both dialects."""

from __future__ import annotations

import pytest

from chimeway import db as dbmod
from chimeway.errors import EventLedgerImmutableError
from chimeway.models import new_id
from chimeway.ops.operator_record import Action, OperatorAction, write


def test_given_the_migrated_schema_then_the_operator_table_matches_its_model(configured):
    database = configured.database
    columns = {c.name: c for c in database.get_columns(OperatorAction._meta.table_name)}
    fields = {f.column_name: f for f in OperatorAction._meta.sorted_fields}
    assert set(columns) == set(fields)
    for name, field in fields.items():
        assert columns[name].null == field.null or name == "id", name
    indexes = {index.name for index in database.get_indexes("chimeway_deliveries")}
    assert "chimeway_deliveries_created" in indexes


def test_given_an_operator_action_when_updated_or_deleted_then_the_table_refuses(configured):
    write(Action.REDRIVE, delivery_id=new_id(), tenant_id="default", actor="test", reason="why")
    for statement in ("UPDATE chimeway_operator_actions SET actor = 'x'", "DELETE FROM chimeway_operator_actions"):
        with pytest.raises(EventLedgerImmutableError), dbmod.transaction():
            dbmod.execute(statement)
    with pytest.raises(Exception, match="CHECK|check"), dbmod.transaction():
        OperatorAction.create(tenant_id="default", delivery_id=new_id(), action="delete", actor="test")
