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

from chimeway.errors import ChimewayError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

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


def _configure() -> Any:
    from chimeway.runtime import current

    return current()


@command("migrate", "apply the schema migrations (safe to run twice or concurrently)", _json_flag)
def cmd_migrate(args: argparse.Namespace) -> int:
    from chimeway.migrator import migrate

    runtime = _configure()
    result = migrate(runtime.database)
    applied = ", ".join(result.applied) or "nothing to apply"
    emit(args, {"applied": result.applied, "version": result.current}, f"schema at version {result.current} ({applied})")
    return EXIT_OK


@command("status", "counts by status and reason, stalled deliveries, orphan backlog", _json_flag)
def cmd_status(args: argparse.Namespace) -> int:
    from chimeway.status import collect, render

    report = collect(_configure())
    emit(args, report, render(report))
    return EXIT_OK


@command("demo", "migrate the configured database and show its status", _json_flag)
def cmd_demo(args: argparse.Namespace) -> int:
    from chimeway.migrator import migrate
    from chimeway.status import collect, render

    runtime = _configure()
    migrate(runtime.database)
    report = collect(runtime)
    emit(args, report, render(report))
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
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as err:
        if args.debug:
            raise
        kind = "" if isinstance(err, ChimewayError) else f"{type(err).__name__}: "
        print(f"chimeway: error: {kind}{err}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
