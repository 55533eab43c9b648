"""Drain measurements: the baseline and Chimeway workers emptying a queue of N deliveries.

Both sides are measured the same way: the messages are all enqueued while no worker runs, the
workers start, and the harness polls the count of terminal rows. Throughput is counted from the
first poll that saw progress to the poll that saw all N, so worker boot time is left out on both
sides alike. Peak memory is each worker process's VmHWM just before it is stopped.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

from tests.bench import BASELINE_ACTOR, BASELINE_NAMESPACE, BASELINE_QUEUE, sql
from tests.bench.env import BenchEnv
from tests.harness.processes import cpu_seconds, group_pids, peak_rss_kib, tree_cpu_seconds
from tests.harness.progress import say
from tests.harness.stack import base_env, chimeway_env, dramatiq_argv, wait_until

TERMINAL = ("succeeded", "suppressed", "cancelled")
COUNT_TERMINAL = "SELECT count(*) FROM chimeway_deliveries WHERE status IN ('succeeded', 'suppressed', 'cancelled')"


def _cpu(env: BenchEnv, process: str) -> dict[str, float]:
    """CPU seconds used so far by the worker group, the PostgreSQL cluster and Redis."""
    master = env.sup.processes[process].pid or 0
    postmaster = env.pg.postmaster_pid()
    redis_pid = env.rd.proc.pid if env.rd.proc is not None else None
    return {
        "workers": sum(cpu_seconds(pid) for pid in group_pids(master)),
        "postgres": tree_cpu_seconds(postmaster) if postmaster else 0.0,
        "redis": cpu_seconds(redis_pid) if redis_pid else 0.0,
    }


def measure_drain(env: BenchEnv, conn: Any, process: str, n: int, timeout: float) -> dict[str, Any]:
    """Poll until ``n`` rows are terminal; throughput, CPU per delivery (load-independent), peak memory,
    and the statements and commits the workers sent per delivery."""
    cur = conn.cursor()
    database = conn.get_dsn_parameters()["dbname"]
    counted = sql.reset_statements(env) >= 0
    commits_before = sql.commits(env, database) if counted else 0
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    first: tuple[float, int] | None = None
    cpu_first: dict[str, float] = {}
    last_report = started
    done = 0
    while True:
        cur.execute(COUNT_TERMINAL)
        done = cur.fetchone()[0]
        now = time.monotonic()
        if first is None and done > 0:
            first = (now, done)
            cpu_first = _cpu(env, process)
        if done >= n or now - started > timeout:
            break
        if now - last_report > 5:
            say(f"  {process}: {done}/{n} terminal")
            last_report = now
        time.sleep(0.05)
    cpu_last = _cpu(env, process)
    pids = group_pids(env.sup.processes[process].pid or 0)
    master = env.sup.processes[process].pid
    rss = {pid: peak_rss_kib(pid) for pid in pids if pid != master}
    if first is None or done < n:
        raise TimeoutError(f"{process}: only {done}/{n} deliveries terminal after {timeout:.0f}s")
    seconds = max(now - first[0], 1e-6)
    drained = max(1, n - first[1])
    statements = {}
    if counted:  # the whole drain's, boot included, per delivery; commits once the workers stopped
        statements = {"statements_per_delivery": sql.top_statements(env, n)["statements_per_delivery"],
                      "_commits_before": (database, commits_before)}
    return {
        **statements,
        "n": n,
        "seconds": round(seconds, 2),
        "per_second": round(drained / seconds, 1),
        "cpu_ms_per_delivery": {name: round(1000 * (cpu_last[name] - cpu_first[name]) / drained, 3)
                                for name in cpu_last},
        "peak_worker_rss_mib": round(max(rss.values(), default=0) / 1024, 1),
        "worker_processes": len(rss),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def drain_rounds(env: BenchEnv, rounds: int, latency: bool) -> dict[str, Any]:
    """Baseline and Chimeway drains taken in turn ``rounds`` times, so that both sides meet the same
    drift of a shared machine; the round with the median ratio stands for the run, every round's
    figures are kept. Latency is measured once, in the first round."""
    cfg = env.cfg
    taken = []
    for number in range(1, max(1, rounds) + 1):
        say(f"drain round {number}/{rounds}")
        base = baseline_drain(env, cfg.n, cfg.processes, cfg.threads)
        chim = chimeway_drain(env, cfg.n, cfg.processes, cfg.threads, latency=latency and number == 1)
        taken.append({"baseline": base, "chimeway": chim, "ratio": round(chim["per_second"] / base["per_second"], 3)})
        if cfg.compare_unbatched:  # the same drain without group commit: the batcher's effect, in this run
            alone = chimeway_drain(env, cfg.n, cfg.processes, cfg.threads, label="chimeway_unbatched",
                                   latency=latency and number == 1, settings={"group_commit_max": 1})
            taken[-1]["unbatched"] = alone
            taken[-1]["unbatched_ratio"] = round(alone["per_second"] / base["per_second"], 3)
        if cfg.drain_rate_limit:  # the same drain with a rate limit above the throughput: the check's cost
            limited = chimeway_drain(env, cfg.n, cfg.processes, cfg.threads, label="chimeway_rate_limited",
                                     settings={"rate_limits": cfg.drain_rate_limit})
            taken[-1]["rate_limited_ratio"] = round(limited["per_second"] / base["per_second"], 3)
            taken[-1]["rate_limited_per_second"] = limited["per_second"]
            # CPU per delivery does not swing with the machine's load as throughput does
            taken[-1]["cpu_ms_per_delivery"] = {"chimeway": chim["cpu_ms_per_delivery"],
                                                "rate_limited": limited["cpu_ms_per_delivery"]}
    median = sorted(taken, key=lambda r: r["ratio"])[(len(taken) - 1) // 2]
    first = taken[0]
    measured = {key: first["chimeway"][key] for key in ("latency", "latency_high") if key in first["chimeway"]}
    result = {
        "baseline": median["baseline"],
        "chimeway": dict(median["chimeway"], **measured),
        "rounds": [{"baseline_per_second": r["baseline"]["per_second"], "chimeway_per_second": r["chimeway"]["per_second"],
                    "ratio": r["ratio"],
                    **{k: r[k] for k in ("rate_limited_per_second", "rate_limited_ratio", "cpu_ms_per_delivery",
                                         "unbatched_ratio") if k in r}} for r in taken],
    }
    if "unbatched" in median:  # group commit off: the figures before it, from the same round
        alone = first["unbatched"]
        result["unbatched"] = dict(median["unbatched"], **{key: alone[key] for key in ("latency", "latency_high")
                                                           if key in alone})
    return result


# --- baseline ---------------------------------------------------------------------------------------


def create_baseline_rows(conn: Any, n: int) -> list[str]:
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO chimeway_deliveries (id, notification_id, channel, recipient, adapter, payload) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'email', 'bench-' || g || '@example.test', 'fake', "
        "'{\"fake_outcomes\": [\"ok\"]}'::jsonb FROM generate_series(1, %s) AS g RETURNING id",
        (n,),
    )
    return [str(row[0]) for row in cur.fetchall()]


def enqueue_baseline(redis_url: str, ids: list[str]) -> float:
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=BASELINE_NAMESPACE)
    started = time.monotonic()
    for delivery_id in ids:
        broker.enqueue(Message(queue_name=BASELINE_QUEUE, actor_name=BASELINE_ACTOR, args=(delivery_id,), kwargs={},
                               options={}))
    seconds = time.monotonic() - started
    broker.close()
    return seconds


def baseline_drain(env: BenchEnv, n: int, processes: int, threads: int, label: str = "baseline") -> dict[str, Any]:
    url = env.fresh_database(label)
    conn = env.pg.connect(label)
    ids = create_baseline_rows(conn, n)
    env.rd.client().flushall()
    seconds = enqueue_baseline(env.rd.url(), ids)
    say(f"{label}: {n} rows created, messages enqueued in {seconds:.1f}s; starting {processes}x{threads} workers")
    env.sup.add(label, dramatiq_argv("tests.bench.baseline_worker", processes, threads),
                base_env(BENCH_DATABASE_URL=url, BENCH_REDIS_URL=env.rd.url()), keep_alive=False)
    env.sup.start(label)
    try:
        result = measure_drain(env, conn, label, n, env.cfg.drain_timeout)
        env.sup.stop(label)
        count_commits(env, result, n)
    finally:
        env.sup.stop(label)
        conn.close()
        env.drop_database(label)
    say(f"{label}: {result['per_second']}/s")
    return result


def count_commits(env: BenchEnv, result: dict[str, Any], n: int) -> dict[str, Any]:
    """Commits per delivery, read after the workers stopped: a backend reports its counts to
    pg_stat_database lazily (at most once a second while busy), and at exit."""
    noted = result.pop("_commits_before", None)
    if noted is not None:
        database, before = noted
        result["commits_per_delivery"] = round((sql.commits(env, database) - before) / n, 2)
    return result


# --- chimeway ---------------------------------------------------------------------------------------


def configure_chimeway(env: BenchEnv, database_url: str) -> Any:
    import chimeway

    return chimeway.configure(database_url=database_url, redis_url=env.rd.url(), environ={})


def send_many(n: int, outcomes: list[str] | None = None) -> tuple[list[str], float]:
    import chimeway

    payload = {"fake_outcomes": outcomes or ["ok"]}
    ids = []
    started = time.monotonic()
    for i in range(n):
        delivery = chimeway.send("email", f"bench-{i}@example.test", payload, adapter="fake")
        ids.append(str(delivery.id))
    return ids, time.monotonic() - started


def worker_env(env: BenchEnv, database_url: str, threads: int, **settings: Any) -> dict[str, str]:
    return chimeway_env(database_url, env.rd.url(), db_pool_size=threads + 2, **{**env.cfg.worker_settings, **settings})


def chimeway_drain(env: BenchEnv, n: int, processes: int, threads: int, label: str = "chimeway",
                   latency: bool = False, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    url = env.fresh_database(label)
    env.rd.client().flushall()
    configure_chimeway(env, url)
    _, send_seconds = send_many(n)
    say(f"{label}: {n} sends in {send_seconds:.1f}s ({n / send_seconds:.0f}/s); "
        f"starting {processes}x{threads} workers")
    env.sup.add(label, dramatiq_argv("chimeway.worker", processes, threads),
                worker_env(env, url, threads, **(settings or {})), keep_alive=False)
    conn = env.pg.connect(label)
    env.sup.start(label)
    try:
        result = measure_drain(env, conn, label, n, env.cfg.drain_timeout)
        result["enqueue_per_second"] = round(n / send_seconds, 1)
        env.sup.stop(label)
        count_commits(env, result, n)
        if latency:  # on workers started afresh, as the drain's were, once they took a first delivery
            env.sup.start(label)
            import chimeway

            first = chimeway.send("email", "warm-up@example.test", {"fake_outcomes": ["ok"]}, adapter="fake").id
            wait_until(lambda: chimeway.get_delivery(first).is_terminal, 60, 0.1, "the restarted workers' first delivery")
            result["latency"] = measure_latency(env, conn, env.cfg.latency_rate, env.cfg.latency_seconds)
            if env.cfg.latency_high_rate:
                result["latency_high"] = measure_latency(env, conn, env.cfg.latency_high_rate,
                                                         env.cfg.latency_seconds)
    finally:
        env.sup.stop(label)
        conn.close()
        _unconfigure()
        env.drop_database(label)
    say(f"{label}: {result['per_second']}/s")
    return result


def _unconfigure() -> None:
    from chimeway.wiring.runtime import reset

    reset()


def measure_latency(env: BenchEnv, conn: Any, rate: float, seconds: float) -> dict[str, Any]:
    """Commit → terminal at a steady rate while the workers run (terminal time from the row itself)."""
    import chimeway

    count = int(rate * seconds)
    # one send() per tick up to 100/s; above, one send_many() of rate/100 items every 10 ms (one
    # process's send() alone does not reach 1,000/s here); each item's commit is the call's return
    per_tick = max(1, int(rate // 100))
    say(f"  latency: {count} sends at {rate:.0f}/s ({per_tick} per commit)")
    committed: dict[str, float] = {}
    started = time.monotonic()
    late = 0
    for i in range(0, count, per_tick):
        due = started + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -0.05:
            late += 1
        items = [{"channel": "email", "recipient": f"latency-{uuid.uuid4().hex}@example.test",
                  "payload": {"fake_outcomes": ["ok"]}, "adapter": "fake"} for _ in range(min(per_tick, count - i))]
        sent = ([chimeway.send(**items[0])] if per_tick == 1 else chimeway.send_many(items))
        at = time.time()
        committed.update((str(delivery.id), at) for delivery in sent)
    cur = conn.cursor()

    def all_terminal() -> bool:
        cur.execute("SELECT count(*) FROM chimeway_deliveries WHERE id = ANY(%s::uuid[]) AND status IN %s",
                    (list(committed), TERMINAL))
        return cur.fetchone()[0] >= count

    wait_until(all_terminal, env.cfg.drain_timeout, 0.2, "latency deliveries terminal")
    cur.execute(
        "SELECT d.id::text, extract(epoch FROM greatest(d.updated_at, max(a.created_at))) "
        "FROM chimeway_deliveries d LEFT JOIN chimeway_delivery_attempts a ON a.delivery_id = d.id "
        "WHERE d.id = ANY(%s::uuid[]) GROUP BY d.id",
        (list(committed),),
    )
    latencies = sorted(max(0.0, float(done) - committed[key]) * 1000 for key, done in cur.fetchall())
    return {
        "rate_per_second": rate,
        "n": count,
        "sends_behind_schedule": late,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
    }
