"""send_many: one INSERT per chunk in the caller's transaction, keys honoured, one bad item refuses
all, messages after the commit (pipelined on Redis); and chimeway send-many from JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import chimeway
from chimeway.errors import IdempotencyConflictError, InvalidSendError
from chimeway.models import Delivery
from chimeway.testing import drain


def item(n: int, **fields):
    return {"channel": "email", "recipient": f"user{n}@example.com", "payload": {"n": n}, **fields}


def test_given_keys_new_existing_and_repeated_when_sending_many_then_one_delivery_per_key_in_order(
    runtime, worker, calls
) -> None:
    # Given one key already used by send()
    earlier = chimeway.send("email", "old@example.com", {"n": -1}, idempotency_key="existing")
    drain(runtime)
    # When 300 items are sent at once: new keys, the existing key, and one key twice
    items = [item(n, idempotency_key=f"k{n}") for n in range(297)]
    items += [
        {"channel": "email", "recipient": "old@example.com", "payload": {"n": -1}, "idempotency_key": "existing"},
        item(1000, idempotency_key="twice"),
        item(1000, idempotency_key="twice"),
    ]
    sent = chimeway.send_many(items)
    drain(runtime)
    # Then the answer follows the items, keys map to one delivery each, and each new one is sent once
    assert [d.recipient for d in sent] == [i["recipient"] for i in items]
    assert sent[297].id == earlier.id and sent[298].id == sent[299].id
    assert Delivery.select().count() == 1 + 297 + 1
    assert {d.status for d in Delivery.select()} == {"succeeded"}
    assert len(calls()) == 1 + 297 + 1  # the existing delivery was not sent again


def test_given_more_than_one_chunk_then_every_item_is_stored_and_sent(runtime, worker, calls) -> None:
    sent = chimeway.send_many(item(n) for n in range(2345))
    drain(runtime)
    assert len({d.id for d in sent}) == 2345
    assert Delivery.select().where(Delivery.status == "succeeded").count() == 2345
    assert len(calls()) == 2345


def test_given_a_transaction_that_rolls_back_then_nothing_is_stored_or_sent(runtime, worker, calls, queued) -> None:
    with pytest.raises(RuntimeError), runtime.database.atomic():
        chimeway.send_many([item(n) for n in range(300)])
        raise RuntimeError("the caller changes its mind")
    drain(runtime)
    assert Delivery.select().count() == 0 and calls() == [] and queued() == 0


def test_given_the_callers_transaction_then_messages_wait_for_its_commit(runtime, queued) -> None:
    with runtime.database.atomic():
        chimeway.send_many([item(n) for n in range(5)])
        assert queued() == 0
    assert queued() == 5


def test_given_send_many_then_each_message_names_its_adapter_as_send_does(runtime) -> None:
    # The deliver actor checks limits and circuits before it loads only when the message names the
    # adapter; without it a bulk delivery would take the two-statement path.
    from dramatiq import Message

    from chimeway.dispatch.actors import QUEUE
    from chimeway.dispatch.enqueue import ADAPTER_OPTION, ROUTE_OPTION

    sent = chimeway.send_many([item(n) for n in range(3)])
    messages = [Message.decode(raw) for raw in list(runtime.broker.queues[QUEUE].queue)]
    assert sorted(m.args[0] for m in messages) == sorted(d.id for d in sent)
    assert {(m.options[ADAPTER_OPTION], m.options[ROUTE_OPTION]) for m in messages} == {(sent[0].adapter,) * 2}


@pytest.mark.parametrize(("bad", "argument"), [
    ({"channel": "email", "recipient": "  "}, "recipient"),
    ({"channel": "email", "recipient": "a@example.com", "priority": "urgent"}, "priority"),
    ({"channel": "email", "recipient": "a@example.com", "colour": "red"}, "colour"),
    ({"recipient": "a@example.com"}, "channel"),
    ("not a dict", "item"),
])
def test_given_one_bad_item_then_the_call_is_refused_naming_its_index_and_nothing_is_stored(
    runtime, queued, bad, argument
) -> None:
    items = [item(n) for n in range(250)]
    items.insert(137, bad)
    with pytest.raises(InvalidSendError) as refused:
        chimeway.send_many(items)
    assert refused.value.index == 137 and refused.value.argument == argument
    assert str(refused.value).startswith(f"items[137].{argument}:")
    assert "a@example.com" not in str(refused.value)
    assert Delivery.select().count() == 0 and queued() == 0


def test_given_a_key_reused_for_another_send_then_the_call_is_refused_naming_the_item(runtime, queued) -> None:
    chimeway.send("email", "ann@example.com", {}, idempotency_key="k")
    before = queued()
    with pytest.raises(IdempotencyConflictError) as refused:
        chimeway.send_many([item(0), item(1), item(2, idempotency_key="k")])
    assert refused.value.index == 2 and "recipient" in refused.value.differing
    with pytest.raises(IdempotencyConflictError) as in_call:
        chimeway.send_many([item(0, idempotency_key="j"), item(1, idempotency_key="j")])
    assert in_call.value.index == 1
    assert Delivery.select().count() == 1 and queued() == before


def test_given_a_tenant_for_the_call_then_items_without_one_take_it(runtime) -> None:
    sent = chimeway.send_many([item(0), item(1, tenant_id="acme")], tenant_id="globex")
    assert [d.tenant_id for d in sent] == ["globex", "acme"]


# --- on Redis: pipelined enqueue ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_given_redis_then_the_messages_of_a_chunk_go_in_one_pipeline_not_one_round_trip_each(
    redis_runtime, monkeypatch
) -> None:
    # Given a count of the commands sent to Redis one at a time (a pipeline sends its own way)
    client = redis_runtime.broker.client
    single = []
    original = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *a, **k: single.append(a[0]) or original(*a, **k))
    # When 500 deliveries are sent
    sent = chimeway.send_many([item(n, priority=("high", "normal", "bulk")[n % 3]) for n in range(500)])
    # Then each has its message on its lane's queue, and no more than a few commands went one by one
    namespace = redis_runtime.settings.redis_namespace
    queued = {lane: redis_runtime.redis.hlen(f"{namespace}:{lane}.msgs")
              for lane in ("chimeway_high", "chimeway", "chimeway_bulk")}
    assert queued == {"chimeway_high": 167, "chimeway": 167, "chimeway_bulk": 166}
    assert len(sent) == 500 and len(single) < 10, single


# --- the command line -----------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chimeway", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_json_lines_then_send_many_stores_them_and_prints_a_summary(worker_env, tmp_path: Path) -> None:
    lines = [json.dumps(item(n, priority="bulk")) for n in range(1500)]
    lines.insert(700, "")  # blank lines are skipped
    source = tmp_path / "items.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = run_cli(["send-many", str(source)], worker_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"lines": 1500, "deliveries": 1500, "chunks": 2}
    from_stdin = run_cli(["send-many", "-", "--tenant", "acme"], worker_env, stdin=json.dumps(item(9)) + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["deliveries"] == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_a_bad_line_then_send_many_names_it_and_stores_nothing_of_its_chunk(
    worker_env, redis_runtime, tmp_path: Path
) -> None:
    lines = [json.dumps(item(n)) for n in range(1200)]
    lines[1100] = json.dumps({"channel": "email", "recipient": ""})
    source = tmp_path / "items.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = run_cli(["send-many", str(source)], worker_env)
    assert done.returncode != 0
    assert "line 1101: recipient" in done.stderr and "nothing of its chunk was stored" in done.stderr
    assert Delivery.select().count() == 1000  # the first chunk; none of the second
    broken = run_cli(["send-many", "-"], worker_env, stdin=json.dumps(item(0)) + "\n{oops\n")
    assert broken.returncode != 0 and "line 2: not valid JSON" in broken.stderr
    assert Delivery.select().count() == 1000



@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_given_priority_and_at_then_chimeway_send_records_them_and_refuses_a_local_time(worker_env, redis_runtime) -> None:
    done = run_cli(["send", "sms", "+15550100", "--priority", "high", "--at", "2030-01-01T09:00+01:00", "--json"],
                   worker_env)
    assert done.returncode == 0, done.stderr
    row = chimeway.get_delivery(json.loads(done.stdout)["id"])
    assert (row.priority, row.send_at.isoformat()) == ("high", "2030-01-01T08:00:00+00:00")
    local = run_cli(["send", "sms", "+15550100", "--at", "2030-01-01T09:00"], worker_env)
    assert local.returncode == 2 and "--at" in local.stderr and "offset" in local.stderr
    assert Delivery.select().count() == 1
