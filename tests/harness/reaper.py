"""Clean-up that outlives the harness: run as a child process, it reads what to clean from stdin.

Lines: ``group <pgid>`` / ``forget-group <pgid>`` (process groups to SIGKILL), ``pgdata <dir>`` /
``forget-pgdata <dir>`` (PostgreSQL clusters to stop), ``dir <path>`` (trees to remove). When stdin
closes — the harness finished, or died, even by SIGKILL — everything still registered is cleaned.
The harness cleans up itself first; this is the safety net, so every step tolerates "already gone".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    clusters: set[str] = set()
    trees: list[str] = []
    for line in sys.stdin:
        verb, _, arg = line.strip().partition(" ")
        if verb == "group":
            groups.add(int(arg))
        elif verb == "forget-group":
            groups.discard(int(arg))
        elif verb == "pgdata":
            clusters.add(arg)
        elif verb == "forget-pgdata":
            clusters.discard(arg)
        elif verb == "dir":
            trees.append(arg)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    for data in clusters:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                ["runuser", "-u", "postgres", "--", PG_CTL, "stop", "-D", data, "-m", "immediate", "-w"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False,
            )
    for tree in trees:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
