"""The ``chimeway`` command line.

Exit codes: 0 success, 1 failure (one clear line on stderr; the traceback only with ``--debug``),
2 usage error. Commands whose output is data take ``--json`` for a single machine-readable line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chimeway.errors import ChimewayError, ConfigurationError, InvalidSendError
from chimeway.states import REDRIVABLE
from chimeway.wiring.config import mask_url
from chimeway.wiring.runtime_type import Runtime

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line was understood but its values are wrong: exit 2 with one line."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number >= 1")
    return value

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    def register(fn: Command) -> Command:
        _COMMANDS[name] = (fn, arguments, help)
        return fn

    return register


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """Print ``data`` as one JSON line with --json, else the human-readable text."""
    print(json.dumps(data, default=str, sort_keys=True) if getattr(args, "json", False) else human)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON line")


def _configure() -> Runtime:
    """The configured runtime (from the environment): the command line is an entry point, the one
    place of it that looks the runtime up (docs/architecture.md §2)."""
    from chimeway.wiring.runtime import current

    return current()


def _configure_with_redis(command: str) -> Runtime:
    """The runtime, refusing the in-memory broker: a message put on it vanishes when this command
    exits, so no worker would ever see it (the row would wait for a sweep run with Redis)."""
    runtime = _configure()
    if runtime.settings.redis_url is None:
        raise ConfigurationError(
            f"chimeway {command} needs CHIMEWAY_REDIS_URL (the workers' Redis): without it the message would "
            "go to an in-memory broker that vanishes when this command exits; nothing was written",
            variable="CHIMEWAY_REDIS_URL",
        )
    return runtime


@command("migrate", "apply the schema migrations (safe to run twice or concurrently)", _json_flag)
def cmd_migrate(args: argparse.Namespace) -> int:
    from chimeway.store.migrator import migrate

    runtime = _configure()
    result = migrate(runtime.database)
    applied = ", ".join(result.applied) or "nothing to apply"
    emit(args, {"applied": result.applied, "version": result.current}, f"schema at version {result.current} ({applied})")
    return EXIT_OK


@command("status", "open deliveries, recent outcomes, stalled, orphan backlog, retention, table estimates", _json_flag)
def cmd_status(args: argparse.Namespace) -> int:
    from chimeway.ops.status import collect, render

    report = collect(_configure())
    emit(args, report, render(report))
    return EXIT_OK


def _send_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channel", help="email, sms, push, chat, webhook…")
    parser.add_argument("recipient", help="address, phone number, device token or URL")
    parser.add_argument("--adapter", help="adapter name (default: the channel's configured adapter)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--payload", help="the payload as JSON text")
    source.add_argument("--payload-file", type=argparse.FileType("r"), help="a file holding the payload as JSON")
    parser.add_argument("--set", dest="fields", action="append", default=[], metavar="KEY=VALUE",
                        help="a payload field (repeatable), e.g. --set subject=Hello")
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--idempotency-key")
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--category")
    parser.add_argument("--priority", choices=("high", "normal", "bulk"), default="normal",
                        help="the lane: high is served before the others (default normal)")
    parser.add_argument("--at", dest="send_at", type=_aware_time, metavar="TIME",
                        help="send no earlier than this ISO 8601 time, with its offset (2030-01-01T09:00+01:00)")
    _json_flag(parser)


def _aware_time(text: str) -> Any:
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an ISO 8601 time, e.g. 2030-01-01T09:00+01:00") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("must include its UTC offset (Z or +HH:MM): a local time is ambiguous")
    return value


#: send()'s argument → the ``chimeway send`` option that sets it (the others are spelled alike)
_SEND_OPTIONS = {
    "payload": "--payload",
    "tenant_id": "--tenant",
    "idempotency_key": "--idempotency-key",
    "max_attempts": "--max-attempts",
    "send_at": "--at",
}


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.payload_file is not None:
        with args.payload_file:
            text = args.payload_file.read()
    else:
        text = args.payload or "{}"
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"the payload is not valid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(payload, dict):
        raise UsageError("the payload must be a JSON object")
    for field in args.fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {field!r}")
        payload[key] = value
    return payload


@command("send", "record a delivery and enqueue it (a worker performs it)", _send_arguments)
def cmd_send(args: argparse.Namespace) -> int:
    from chimeway.dispatch.send import send

    payload = _payload(args)  # a usage error comes before any configuration error
    runtime = _configure_with_redis("send")
    try:
        delivery = send(
            args.channel,
            args.recipient,
            payload,
            adapter=args.adapter,
            tenant_id=args.tenant,
            idempotency_key=args.idempotency_key,
            max_attempts=args.max_attempts,
            category=args.category,
            priority=args.priority,
            send_at=args.send_at,
            runtime=runtime,
        )
    except InvalidSendError as err:  # name the option the user typed, not the Python argument
        raise UsageError(f"{_SEND_OPTIONS.get(err.argument, err.argument)}: {err.problem}") from err
    data = {"id": delivery.id, "status": delivery.status, "adapter": delivery.adapter, "channel": delivery.channel}
    emit(args, data, f"delivery {delivery.id} recorded ({delivery.status}, adapter {delivery.adapter})")
    return EXIT_OK


def _send_many_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=argparse.FileType("r"),
                        help="JSON lines, one object of send()'s keywords each ('-': standard input)")
    parser.add_argument("--tenant", help="the tenant of the lines that name none (default 'default')")


@command("send-many", "record and enqueue one delivery per JSON line (chunks of 1,000)", _send_many_arguments)
def cmd_send_many(args: argparse.Namespace) -> int:
    from chimeway.dispatch.bulk import CHUNK

    runtime = _configure_with_redis("send-many")
    summary: dict[str, Any] = {"lines": 0, "deliveries": 0, "chunks": 0}
    progress = sys.stderr.isatty()
    with args.file:
        chunk: list[tuple[int, dict[str, Any]]] = []
        for number, line in enumerate(args.file, start=1):
            if line.strip():
                chunk.append((number, _send_many_line(number, line, summary)))
            if len(chunk) == CHUNK:
                _send_chunk(runtime, args, chunk, summary, progress)
                chunk = []
        _send_chunk(runtime, args, chunk, summary, progress)
    if progress:
        print(file=sys.stderr)
    print(json.dumps(summary, sort_keys=True))
    return EXIT_OK


def _send_many_line(number: int, line: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One line as send()'s keywords: ``send_at`` as ISO 8601 text, ``delay`` in seconds."""
    from datetime import timedelta

    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise _bad_line(number, f"not valid JSON ({err.msg})", summary) from None
    if not isinstance(item, dict):
        raise _bad_line(number, "must be a JSON object", summary)
    if isinstance(item.get("send_at"), str):
        try:
            item["send_at"] = _aware_time(item["send_at"])
        except argparse.ArgumentTypeError as err:
            raise _bad_line(number, f"send_at {err}", summary) from None
    if isinstance(item.get("delay"), int | float) and not isinstance(item["delay"], bool):
        item["delay"] = timedelta(seconds=item["delay"])
    return item


def _send_chunk(runtime: Runtime, args: argparse.Namespace, chunk: list[tuple[int, dict[str, Any]]],
                summary: dict[str, Any], progress: bool) -> None:
    """One send_many() call (one transaction): a refused item stores nothing of its chunk."""
    from chimeway.dispatch.bulk import send_many

    if not chunk:
        return
    try:
        sent = send_many([item for _, item in chunk], tenant_id=args.tenant, runtime=runtime)
    except InvalidSendError as err:
        index = err.index or 0
        raise _bad_line(chunk[index][0], f"{err.argument}: {err.problem}", summary) from err
    summary["lines"] += len(chunk)
    summary["deliveries"] += len({delivery.id for delivery in sent})
    summary["chunks"] += 1
    if progress:  # one line, rewritten in place
        print(f"\rsend-many: {summary['lines']} lines, {summary['deliveries']} deliveries", end="",
              file=sys.stderr, flush=True)


def _bad_line(number: int, problem: str, summary: dict[str, Any]) -> UsageError:
    """A refused line: says which, and that its chunk was not stored (earlier chunks were)."""
    return UsageError(f"line {number}: {problem}; nothing of its chunk was stored "
                      f"(stored before it: {json.dumps(summary, sort_keys=True)})")


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="only this tenant's orphans")
    parser.add_argument("--batch-size", type=_positive, default=1000)
    _json_flag(parser)


@command("reconcile", "link orphan webhook events to their deliveries", _reconcile_arguments)
def cmd_reconcile(args: argparse.Namespace) -> int:
    from chimeway.webhooks.reconciler import reconcile

    runtime = _configure()
    result = reconcile(tenant_id=args.tenant, batch_size=args.batch_size, runtime=runtime)
    emit(args, {"scanned": result.scanned, "linked": result.linked},
         f"scanned {result.scanned} orphans, linked {result.linked}")
    return EXIT_OK


@command("sweep", "re-enqueue deliveries whose message was lost", _json_flag)
def cmd_sweep(args: argparse.Namespace) -> int:
    from chimeway.dispatch.sweep import sweep

    runtime = _configure_with_redis("sweep")
    result = sweep(runtime=runtime)
    data = {**result.by_kind(), "reenqueued": result.reenqueued, "skipped": result.skipped}
    human = "another sweep is running; skipped" if result.skipped else (
        f"re-enqueued {result.reenqueued} (" + ", ".join(f"{k} {v}" for k, v in result.by_kind().items()) + ")"
    )
    emit(args, data, human)
    return EXIT_OK


def _prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=_positive, help="raw webhook retention in days (default CHIMEWAY_WEBHOOK_RETENTION_DAYS)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    _json_flag(parser)


@command("prune", "remove raw webhook rows and terminal history past retention (never an open delivery)", _prune_arguments)
def cmd_prune(args: argparse.Namespace) -> int:
    from chimeway.ops.retention import prune_history
    from chimeway.webhooks.pruner import prune

    runtime = _configure()
    raw = prune(retention_days=args.days, runtime=runtime, dry_run=args.dry_run)
    history = prune_history(runtime=runtime, dry_run=args.dry_run)
    data = {"deleted": raw, **history.as_dict()}
    verb = "would remove" if args.dry_run else "removed"
    if history.cutoff is None:
        kept = "CHIMEWAY_RETENTION_DAYS=0: every delivery, attempt and event is kept"
    else:
        kept = (
            f"{verb} {history.deliveries} deliveries, {history.attempts} attempts, {history.events} events and "
            f"{history.orphans} orphan events last changed before {history.cutoff:%Y-%m-%d %H:%M} UTC "
            f"({history.retention_days} days; open deliveries are kept)"
        )
        if history.partitions:
            kept += f"\n{verb} whole month partitions: {', '.join(sorted(history.partitions))}"
        if history.kept_partitions:
            kept += f"\nkept past retention (a row of an open delivery): {', '.join(history.kept_partitions)}"
        if history.busy_partitions:
            kept += f"\nleft for the next prune (table busy): {', '.join(history.busy_partitions)}"
    emit(args, data, f"{verb} {raw} raw webhook rows\n{kept}")
    return EXIT_OK


@command("scheduler", "run the schedules: reconcile, sweep, prune (stop with SIGTERM or Ctrl-C)")
def cmd_scheduler(args: argparse.Namespace) -> int:
    import logging

    from chimeway.ops.scheduler import default_jobs, run

    # Each tick's result (fired, or already fired by another scheduler) is an INFO line on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime = _configure()
    schedule = ", ".join(f"{job.name} '{job.cron}'" for job in default_jobs(runtime))
    print(f"scheduler running: {schedule}", flush=True)
    result = run(runtime=runtime)
    fired = ", ".join(f"{name} {count}" for name, count in sorted(result.fired.items())) or "nothing"
    print(f"scheduler stopped; fired {fired}", flush=True)
    return EXIT_OK


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["serve"], help="serve: run the webhook endpoint (development server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)


@command("webhooks", "serve POST /webhooks/<provider> with a development WSGI server", _serve_arguments)
def cmd_webhooks(args: argparse.Namespace) -> int:
    from chimeway.webhooks.wsgi import make

    _configure()
    with make(args.host, args.port) as server:
        print(f"listening on http://{args.host}:{server.server_port}/webhooks/<provider>", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the delivery id")
    parser.add_argument("--tenant", help="only if the delivery is this tenant's")
    _json_flag(parser)


@command("show", "print a delivery's timeline: attempts, events, policy and operator actions", _show_arguments)
def cmd_show(args: argparse.Namespace) -> int:
    from chimeway.ops.history import timeline
    from chimeway.store.deliveries import get_delivery

    _configure()
    delivery = get_delivery(args.id, args.tenant)
    entries = timeline(delivery.id, tenant_id=args.tenant)
    data = {"delivery": _delivery_summary(delivery), "entries": [entry.as_dict() for entry in entries]}
    head = (f"delivery {delivery.id}  {delivery.status}" + (f"({delivery.reason})" if delivery.reason else "")
            + f"  {delivery.channel} via {delivery.adapter}  tenant {delivery.tenant_id}  "
            f"attempts {delivery.attempt_count}/{delivery.max_attempts}")
    lines = [head] + [f"{entry.at:%Y-%m-%d %H:%M:%S}  {entry.kind:<10}  {entry.summary}" for entry in entries]
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def _delivery_summary(delivery: Any) -> dict[str, Any]:
    """The delivery's columns for ``show --json``, without its payload and metadata (they may hold
    personal data); the recipient is there: the operator asked for this delivery by id."""
    from chimeway.models import Delivery

    hidden = {"payload", "metadata", "idempotency_fingerprint", "lock_version"}
    return {f.name: getattr(delivery, f.name) for f in Delivery._meta.sorted_fields if f.name not in hidden}


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str) -> Any:
    from datetime import timedelta

    number, unit = text[:-1], text[-1:].lower()
    if unit not in _SINCE_UNITS or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError("expected a duration such as 90s, 30m, 2h or 7d")
    return timedelta(seconds=int(number) * _SINCE_UNITS[unit])


def _redrive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", help="one delivery id (or use --reason and --since for many)")
    parser.add_argument("--max-attempts", type=int, help="new attempts on top of those spent (default: the original budget)")
    parser.add_argument("--tenant", help="only this tenant's deliveries")
    parser.add_argument("--why", help="why: kept in the operator record")
    parser.add_argument("--reason", choices=sorted(REDRIVABLE), help="bulk: the reason cancelled")
    parser.add_argument("--since", type=_since, help="bulk: cancelled within this long, e.g. 2h")
    parser.add_argument("--adapter", help="bulk: only this adapter's deliveries")
    parser.add_argument("--dry-run", action="store_true", help="bulk: list what would be redriven, change nothing")
    _json_flag(parser)


@command("redrive", "send cancelled(retries_exhausted | permanent_failure) deliveries again", _redrive_arguments)
def cmd_redrive(args: argparse.Namespace) -> int:
    from chimeway.ops.operations import redrive, redrive_many

    bulk = args.reason is not None or args.since is not None
    if bulk == (args.id is not None):
        raise UsageError("give a delivery id, or --reason and --since (not both)")
    if bulk and (args.reason is None or args.since is None):
        raise UsageError("a bulk redrive needs both --reason and --since")
    runtime = _configure() if args.dry_run else _configure_with_redis("redrive")
    try:
        if not bulk:
            delivery = redrive(args.id, max_attempts=args.max_attempts, tenant_id=args.tenant, why=args.why,
                               runtime=runtime)
            data = {"id": delivery.id, "status": delivery.status, "max_attempts": delivery.max_attempts}
            emit(args, data, f"delivery {delivery.id} redriven: {delivery.status}, "
                             f"attempts {delivery.attempt_count}/{delivery.max_attempts}")
            return EXIT_OK
        from chimeway import db

        report = redrive_many(
            reason=args.reason, since=db.now() - args.since, adapter=args.adapter, tenant_id=args.tenant,
            max_attempts=args.max_attempts, dry_run=args.dry_run, why=args.why,
            progress=_progress_bar if sys.stderr.isatty() and not args.json else None, runtime=runtime,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err
    data = {"matched": len(report.matched), "redriven": len(report.redriven), "skipped": len(report.skipped),
            "dry_run": args.dry_run, "ids": report.matched if args.dry_run else report.redriven}
    human = (f"would redrive {len(report.matched)}: " + " ".join(report.matched) if args.dry_run
             else f"redrove {len(report.redriven)} of {len(report.matched)} (skipped {len(report.skipped)}: changed meanwhile)")
    emit(args, data, human)
    return EXIT_OK


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def _console_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--no-auth", action="store_true",
                        help="serve without a password (only with a loopback --host)")


@command("console", "serve the operator's web console (needs the [console] extra)", _console_arguments)
def cmd_console(args: argparse.Namespace) -> int:
    import logging

    from chimeway.console import serve

    # One INFO line per request on stderr: method, path and status, never the query string.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args.host, args.port, no_auth=args.no_auth)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=_positive, default=300, help="deliveries to send (default 300)")
    parser.add_argument("--seed", type=int, help="random seed for a repeatable outcome mix")
    parser.add_argument("--yes", action="store_true",
                        help="add the demo's rows to CHIMEWAY_DATABASE_URL without asking")
    _json_flag(parser)


def _confirm_demo_database(args: argparse.Namespace) -> None:
    """The demo writes real rows: outside the embedded default, say where and ask (or need --yes)."""
    from chimeway.wiring.config import DEFAULT_DATABASE_URL, load_settings

    url = load_settings().database_url
    if url == DEFAULT_DATABASE_URL or args.yes:
        return
    notice = (f"the demo will add about {args.count} deliveries, their attempts, webhook events and "
              f"suppressions to {mask_url(url)} (CHIMEWAY_DATABASE_URL)")
    if not sys.stdin.isatty():
        raise UsageError(f"{notice}; run it with --yes to go ahead")
    print(f"{notice}; continue? [y/N] ", end="", file=sys.stderr, flush=True)  # stdout may be --json
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError("demo not run; nothing was written")


@command("demo", "send a few hundred notifications end to end and summarize (no server needed)", _demo_arguments)
def cmd_demo(args: argparse.Namespace) -> int:
    import io
    import logging

    from chimeway.ops import demo
    from chimeway.wiring.runtime import configure

    _confirm_demo_database(args)
    # The demo shows Chimeway's errors as single lines (the one unclassified outcome is meant to be
    # loud); per-delivery warnings and Dramatiq's retry tracebacks would drown the summary.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dramatiq").setLevel(logging.CRITICAL)
    runtime = configure(**demo.settings())
    report = demo.run(args.count, runtime=runtime, out=io.StringIO() if args.json else sys.stdout, seed=args.seed)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimeway", description="Reliable notification delivery.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (fn, arguments, help_text) in _COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        arguments(child)
        child.set_defaults(handler=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed usage; keep its code (0 for --help, 2 for errors)
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except UsageError as err:
        print(f"chimeway {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as err:
        if args.debug:
            raise
        kind = "" if isinstance(err, ChimewayError) else f"{type(err).__name__}: "
        print(f"chimeway: error: {kind}{mask_url(str(err))}", file=sys.stderr)  # a driver may echo a URL
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
