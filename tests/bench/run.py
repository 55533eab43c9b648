"""``python -m tests.bench``: every figure of issue 6 in one run, a readable table, then one JSON line.

Sizes come from flags or ``BENCH_*`` variables (``--quick`` for a smoke run of a minute or two).
A section that fails is reported with its error and the others still run; the exit code says
whether every section produced its figures. No figure is asserted: targets are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from tests.bench.env import BenchConfig, BenchEnv
from tests.harness.processes import Supervisor
from tests.harness.progress import say
from tests.harness.servers import PG_BIN, private_servers
from tests.harness.stack import REPO

QUICK = {"n": 2_000, "rounds": 1, "latency_rate": 50.0, "latency_high_rate": 200.0, "latency_seconds": 5.0, "scale_n": 1_000, "ingest_events": 500,
         "wsgi_seconds": 3.0, "reconcile_events": 10_000, "reconcile_orphans": 2_000,
         "reconcile_scale": (1_000, 2_000, 4_000), "profile_n": 1_000,
         "console_deliveries": 100_000, "send_many_n": 2_000, "priority_bulk_n": 2_000, "priority_sends": 20,
         "sweep_lost": 1_000}

TARGETS = {
    "ratio_to_baseline": {"goal": ">= 0.85 (issue 17)", "stretch": ">= 1.0"},
    "reconcile_backlog_seconds": {"goal": "< 1.0 (20,000 orphans among 100,000 events)"},
    "reconcile_idle_tick_ms": {"goal": "O(orphans), not O(events): flat as the ledger grows"},
    "console": {"goal": "list and recipient search < 100 ms with 1,000,000 deliveries"},
    "send_many_ratio_to_send": {"goal": ">= 5"},
    "priority_p99_ms": {"goal": "< 250 (high-priority commit → terminal through a bulk backlog)"},
    "status_ms_10m": {"goal": "< 200"},
    "sweep_idle_ms_10m": {"goal": "< 50"},
    "reconcile_idle_ms_10m": {"goal": "< 50"},
    "prune_day_seconds_10m": {"goal": "< 10"},
    "drain_ratio_10m": {"goal": "within 10 % of 1.0"},
}


def parse_config(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    defaults = BenchConfig()
    for f in fields(BenchConfig):
        if f.name == "worker_settings":
            continue
        default = getattr(defaults, f.name)
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            type=str if isinstance(default, tuple) else kind,
                            help=f"(env BENCH_{f.name.upper()}, default {default})")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick or os.environ.get("BENCH_QUICK") else {}
    for f in fields(BenchConfig):
        raw = getattr(args, f.name, None)
        if raw is None:
            raw = os.environ.get(f"BENCH_{f.name.upper()}")
        if raw is None or f.name == "worker_settings":
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, tuple):
            kind = type(default[0])
            values[f.name] = tuple(kind(part) for part in str(raw).split(",") if part.strip())
        else:
            values[f.name] = type(default)(raw)
    return BenchConfig(**values)


def run_sections(env: BenchEnv) -> tuple[dict[str, Any], dict[str, str]]:
    from tests.bench import drain

    cfg = env.cfg
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def section(name: str, fn: Callable[[], Any]) -> None:
        if name not in cfg.sections:
            return
        say(f"== {name}")
        try:
            results[name] = fn()
        except Exception as err:  # a failed section is reported, the others still run
            errors[name] = f"{type(err).__name__}: {err}"
            say(f"{name} failed: {errors[name]}\n{traceback.format_exc(limit=6)}")

    section("drain", lambda: drain.drain_rounds(env, cfg.rounds, latency="latency" in cfg.sections))
    section("scaling", lambda: {
        str(p): {
            "baseline": drain.baseline_drain(env, cfg.scale_n, p, cfg.threads, label=f"baseline_p{p}"),
            "chimeway": drain.chimeway_drain(env, cfg.scale_n, p, cfg.threads, label=f"chimeway_p{p}"),
        }
        for p in cfg.scale_processes
    })
    if cfg.profile_n:
        from tests.bench import profile

        section("profile", lambda: profile.profile_drains(env, cfg.profile_n, cfg.processes, cfg.threads))
    from tests.bench import ingest, reconcile, sending

    section("ingest", lambda: ingest.ingest_handle(env, cfg.ingest_events))
    section("wsgi", lambda: ingest.ingest_wsgi(env, cfg.wsgi_seconds, cfg.wsgi_clients))
    section("reconcile", lambda: reconcile.reconcile_bench(env, cfg.reconcile_events, cfg.reconcile_orphans,
                                                           cfg.reconcile_scale))
    from tests.bench import console

    section("console", lambda: console.console_bench(env, cfg.console_deliveries))
    section("send_many", lambda: sending.send_many_bench(env, cfg.send_many_n))
    section("priority", lambda: sending.priority_latency(env, cfg.priority_bulk_n, cfg.processes, cfg.threads,
                                                         cfg.priority_sends, cfg.priority_rate))
    from tests.bench import recovery

    section("sweep", lambda: recovery.sweep_bench(env, cfg.sweep_lost))
    from tests.bench import scale

    section("scale", lambda: scale.scale_bench(env))  # not in the default sections: `make scale`
    return results, errors


def summarize(cfg: BenchConfig, results: dict[str, Any], errors: dict[str, str], seconds: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"bench": "chimeway", "config": {"n": cfg.n, "processes": cfg.processes,
                                                                "threads": cfg.threads,
                                                                "drain_rate_limit": cfg.drain_rate_limit}}
    d = results.get("drain", {})
    if "baseline" in d and "chimeway" in d:
        base, chim = d["baseline"], d["chimeway"]
        ratio = chim["per_second"] / base["per_second"] if base["per_second"] else None
        summary.update({
            "baseline_per_second": base["per_second"],
            "chimeway_per_second": chim["per_second"],
            "ratio_to_baseline": round(ratio, 3) if ratio is not None else None,
            "ratio_rounds": [r["ratio"] for r in d.get("rounds", [])],
            "rate_limited_ratio_rounds": [r["rate_limited_ratio"] for r in d.get("rounds", []) if "rate_limited_ratio" in r],
            "drain_rounds": d.get("rounds", []),
            "enqueue_per_second": chim.get("enqueue_per_second"),
            "latency": chim.get("latency"),
            "peak_worker_rss_mib": {"baseline": base["peak_worker_rss_mib"], "chimeway": chim["peak_worker_rss_mib"]},
            "cpu_ms_per_delivery": {"baseline": base["cpu_ms_per_delivery"], "chimeway": chim["cpu_ms_per_delivery"]},
            "loadavg_1m": {"baseline": base["loadavg_1m"], "chimeway": chim["loadavg_1m"]},
            "latency_high": chim.get("latency_high"),
            "sql_per_delivery": {side: {k: figures.get(k) for k in ("statements_per_delivery", "commits_per_delivery")}
                                 for side, figures in (("baseline", base), ("chimeway", chim))},
        })
        if "unbatched" in d:  # group commit off, in the same rounds: the "before"
            alone = d["unbatched"]
            summary["unbatched"] = {
                "ratio_rounds": [r["unbatched_ratio"] for r in d.get("rounds", []) if "unbatched_ratio" in r],
                "cpu_ms_per_delivery": alone["cpu_ms_per_delivery"], "latency": alone.get("latency"),
                "latency_high": alone.get("latency_high"),
                "sql_per_delivery": {k: alone.get(k) for k in ("statements_per_delivery", "commits_per_delivery")},
            }
    if "scaling" in results:
        summary["scaling"] = {
            p: {"baseline_per_second": r["baseline"]["per_second"], "chimeway_per_second": r["chimeway"]["per_second"],
                "ratio": round(r["chimeway"]["per_second"] / r["baseline"]["per_second"], 3)}
            for p, r in results["scaling"].items()
        }
    for name in ("ingest", "wsgi", "reconcile", "profile", "console"):
        if name in results:
            summary[name] = results[name]
    if "reconcile" in results:
        main = results["reconcile"]["main"]
        summary["reconcile_backlog_seconds"] = main["seconds"]
        summary["reconcile_idle_tick_ms"] = {
            f"{main['events']} events": main["idle_tick_ms"],
            f"{results['reconcile']['events_doubled']['events']} events": results["reconcile"]["events_doubled"]["idle_tick_ms"],
        }
    if "send_many" in results:
        summary["send_many_per_second"] = results["send_many"]["send_many_per_second"]
        summary["send_many_ratio_to_send"] = results["send_many"]["send_many_ratio_to_send"]
        summary["send_per_second"] = results["send_many"]["send_per_second"]
    if "sweep" in results:
        summary["sweep_per_second"] = results["sweep"]["per_second"]
    if "priority" in results:
        summary["priority"] = results["priority"]
        summary["priority_p99_ms"] = results["priority"]["p99_ms"]
    if "scale" in results:
        from tests.bench.scale import summary_fields

        summary["scale"] = results["scale"]
        summary.update(summary_fields(results["scale"]))
    summary["targets"] = TARGETS
    summary["errors"] = errors
    summary["duration_seconds"] = round(seconds, 1)
    return summary


def cfg_rate_limit(summary: dict[str, Any]) -> str:
    return f"CHIMEWAY_RATE_LIMITS={summary['config'].get('drain_rate_limit')}"


def render_table(summary: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: Any, target: str = "") -> None:
        rows.append((name, "—" if value is None else str(value), target))

    if "ratio_to_baseline" in summary:
        row("baseline drain (deliveries/s)", summary["baseline_per_second"])
        row("chimeway drain (deliveries/s)", summary["chimeway_per_second"])
        rounds = summary.get("ratio_rounds") or []
        row("ratio_to_baseline (median round)", summary["ratio_to_baseline"],
            f"goal >= 0.85, stretch >= 1.0; rounds {', '.join(map(str, rounds))}")
        limited = summary.get("rate_limited_ratio_rounds") or []
        if limited:
            row("ratio_to_baseline with a rate limit above throughput", ", ".join(map(str, limited)),
                f"goal within 10 % of the rounds above ({cfg_rate_limit(summary)})")
        row("chimeway enqueue via send() (/s)", summary["enqueue_per_second"])
        alone = summary.get("unbatched") or {}
        if alone:
            row("ratio_to_baseline, group commit off (rounds)", ", ".join(map(str, alone["ratio_rounds"])))
        for key in ("latency", "latency_high"):
            lat = summary.get(key) or {}
            if lat:
                before = alone.get(key) or {}
                row(f"commit→terminal p50 / p99 @ {lat['rate_per_second']:.0f}/s (ms)", f"{lat['p50_ms']} / {lat['p99_ms']}",
                    f"group commit off: {before['p50_ms']} / {before['p99_ms']}" if before else "")
        per = summary.get("sql_per_delivery") or {}
        for kind in ("statements_per_delivery", "commits_per_delivery"):
            if per.get("chimeway", {}).get(kind) is not None:
                row(f"{kind.replace('_', ' ')}: baseline / chimeway", f"{per['baseline'][kind]} / {per['chimeway'][kind]}",
                    f"group commit off: {alone['sql_per_delivery'][kind]}" if alone else "")
        rss = summary["peak_worker_rss_mib"]
        row("peak worker RSS baseline / chimeway (MiB)", f"{rss['baseline']} / {rss['chimeway']}")
        cpu = summary["cpu_ms_per_delivery"]
        for part in ("workers", "postgres", "redis"):
            row(f"CPU ms per delivery, {part}: baseline / chimeway", f"{cpu['baseline'][part]} / {cpu['chimeway'][part]}",
                f"group commit off: {alone['cpu_ms_per_delivery'][part]}" if alone else "")
    for p, r in (summary.get("scaling") or {}).items():
        row(f"scaling {p} proc: baseline / chimeway (/s)",
            f"{r['baseline_per_second']} / {r['chimeway_per_second']}", f"ratio {r['ratio']}")
    ingest = summary.get("ingest") or {}
    if ingest:
        row("ingest via handle(), 1 process (events/s)", ingest.get("per_second"))
    wsgi = summary.get("wsgi") or {}
    if wsgi:
        row(f"ingest via WSGI ({wsgi.get('server')}) (events/s)", wsgi.get("per_second"),
            f"p50 {wsgi.get('p50_ms')} ms, p99 {wsgi.get('p99_ms')} ms")
    rec = summary.get("reconcile") or {}
    if rec:
        main = rec.get("main", {})
        row(f"reconcile {main.get('orphans')} orphans / {main.get('events')} events (s)", main.get("seconds"),
            "goal < 1.0")
        row("reconcile orphans/s", main.get("orphans_per_second"))
        row("reconcile idle tick (ms)", main.get("idle_tick_ms"), "O(orphans)")
        doubled = rec.get("events_doubled", {})
        row(f"reconcile idle tick, same orphans, {doubled.get('events')} events (ms)", doubled.get("idle_tick_ms"),
            "flat vs the line above")
        for size, r in (rec.get("scaling") or {}).items():
            row(f"reconcile {size} orphans (s) / idle tick (ms)", f"{r['seconds']} / {r['idle_tick_ms']}")
    if "sweep_per_second" in summary:
        row("sweep: lost deliveries re-enqueued per second", summary["sweep_per_second"])
    if "send_many_per_second" in summary:
        row("send() one by one (deliveries/s)", summary["send_per_second"])
        row("send_many (deliveries/s)", summary["send_many_per_second"],
            f"ratio {summary['send_many_ratio_to_send']}, goal >= 5")
    prio = summary.get("priority") or {}
    if prio:
        row(f"high priority through {prio['bulk_n']} bulk, p50 / p99 (ms)", f"{prio['p50_ms']} / {prio['p99_ms']}",
            f"goal p99 < 250; {prio['bulk_left_when_done']} bulk still queued at the end")
    for side, prof in (summary.get("profile") or {}).items():
        sql = prof.get("sql") or {}
        if "statements_per_delivery" in sql:
            row(f"profile {side}: SQL statements / server ms per delivery",
                f"{sql['statements_per_delivery']} / {sql['server_ms_per_delivery']}")
    con = summary.get("console") or {}
    for name in ("list_first_page", "list_page_in_the_middle", "search_recipient", "search_recipient_in_tenant",
                 "filter_cancelled", "overview"):
        if name in con:
            row(f"console {name} @ {con['deliveries']} (median / max ms)",
                f"{con[name]['median_ms']} / {con[name]['max_ms']}", "< 100 ms" if name != "overview" else "")
    if "index_cost_100k" in con:
        row("console index: extra cost of insert + 2 updates (%)", con["index_cost_100k"]["extra_cost_percent"])
    for size, r in ((summary.get("scale") or {}).get("sizes") or {}).items():
        row(f"scale {size}: status / sweep idle / reconcile idle (ms)",
            f"{r['status_ms']} / {r['sweep_idle_ms']} / {r['reconcile_idle_ms']}", "< 200 / < 50 / < 50")
        row(f"scale {size}: prune one day (s), drain ratio", f"{r['prune_day_seconds']}, {r.get('drain_ratio')}",
            "< 10 s; within 10 %")
        row(f"scale {size}: upgrade to 0011 (s), hours whose outcome counts are off",
            f"{r.get('upgrade_seconds')}, {r.get('outcome_counts_off')}", "0 off")
    ids = (summary.get("scale") or {}).get("ids")
    if ids:
        row(f"ids {ids['rows']} rows: uuid4 / uuid7 inserts per s",
            f"{ids['uuid4']['rows_per_second']} / {ids['uuid7']['rows_per_second']}",
            f"pkey MiB {ids['uuid4']['pkey_mib']} / {ids['uuid7']['pkey_mib']}")
    for name, err in (summary.get("errors") or {}).items():
        row(f"{name}: FAILED", err[:80])
    width = max((len(r[0]) for r in rows), default=10)
    vwidth = max((len(r[1]) for r in rows), default=5)
    lines = [f"{'measure'.ljust(width)}  {'value'.rjust(vwidth)}  target", "-" * (width + vwidth + 30)]
    lines += [f"{name.ljust(width)}  {value.rjust(vwidth)}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    say(f"bench: {cfg}")
    statements = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
    with_statements = (PG_BIN.parent / "lib" / "pg_stat_statements.so").exists()
    with private_servers("chimeway-bench-", statements if with_statements else None) as (root, reaper, pg, rd):
        sup = Supervisor(root, reaper, REPO)
        env = BenchEnv(cfg, root, reaper, pg, rd, sup)
        try:
            env.prepare_template()
            results, errors = run_sections(env)
        finally:
            sup.stop_all()
    summary = summarize(cfg, results, errors, time.monotonic() - started)
    print(render_table(summary))
    print(json.dumps(summary, sort_keys=True))
    return 1 if errors else 0
