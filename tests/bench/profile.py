"""Where the time goes: py-spy samples every worker process while each side drains a queue.

py-spy (``pip install py-spy``) samples the running ``dramatiq`` processes from outside, all threads,
without changing the code. Only the thread holding the GIL is sampled (``--gil``): the shares are of
the Python CPU time, which is what limits a worker process (the database's own time is measured
separately, statement by statement, through pg_stat_statements). Each sample's stack is summarised
twice: by the library its innermost frame is in (self time), and by the Chimeway and baseline
functions it passes through (inclusive time).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench import drain
from tests.bench.env import BenchEnv
from tests.bench.sql import reset_statements, top_statements
from tests.harness.progress import say
from tests.harness.stack import BIN

#: Buckets for the innermost frame's file, first match wins.
AREAS = (
    ("chimeway", "/chimeway/"),
    ("adapters", "/adapters/"),
    ("baseline", "/tests/bench/"),
    ("peewee", "peewee"),
    ("psycopg2", "psycopg2"),
    ("redis-py", "/redis/"),
    ("dramatiq", "/dramatiq/"),
    ("json", "/json/"),
    ("logging", "/logging/"),
    ("uuid", "uuid.py"),
    ("datetime", "datetime"),
    ("threading/queue", "threading.py"),
    ("threading/queue", "queue.py"),
    ("socket/ssl", "socket.py"),
)
OWN_CODE = ("/chimeway/", "/adapters/", "/tests/bench/baseline_worker.py")


def py_spy() -> str | None:
    found = BIN / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    areas: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        areas[next((name for name, needle in AREAS if needle in leaf), "other")] += count
        leaves[_short(leaf)] += count
        seen = set()
        for frame in frames:
            if any(needle in frame for needle in OWN_CODE):
                name = _short(frame)
                if name not in seen:
                    seen.add(name)
                    functions[name] += count

    def share(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[name, round(100 * value / total, 1)] for name, value in counter.most_common(n)] if total else []

    return {"samples": total, "self_by_area_pct": share(areas, 20), "inclusive_own_code_pct": share(functions, top),
            "top_leaf_frames_pct": share(leaves, 10)}


def _short(frame: str) -> str:
    """``deliver (/x/chimeway/dispatch/actors.py:42)`` → ``deliver (dispatch/actors.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for root in ("/chimeway/", "/adapters/", "/site-packages/", "/lib/python3"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{name} ({path})"


def _record(env: BenchEnv, process: str, out: Path) -> subprocess.Popen[bytes]:
    pid = env.sup.processes[process].pid
    return subprocess.Popen(
        [py_spy() or "py-spy", "record", "--pid", str(pid), "--subprocesses", "--rate", "97", "--format", "raw",
         "--output", str(out), "--nonblocking", "--full-filenames", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def profile_drains(env: BenchEnv, n: int, processes: int, threads: int) -> dict[str, Any]:
    if py_spy() is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    result = {}
    for side in ("baseline", "chimeway"):
        out = env.root / f"profile-{side}.txt"
        label = f"profile_{side}"
        recorder: list[subprocess.Popen[bytes]] = []
        sessions: list[int] = []

        def attach(started_label: str = label, path: Path = out, holder: list = recorder,
                   opened: list = sessions) -> None:
            deadline = time.monotonic() + 60
            while started_label not in env.sup.processes or not env.sup.processes[started_label].alive():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            opened.append(reset_statements(env))  # the sends are done: from here on, only the workers' SQL
            time.sleep(1.0)  # let Dramatiq fork its workers first
            holder.append(_record(env, started_label, path))

        watcher = threading.Thread(target=attach, daemon=True)
        watcher.start()
        run = drain.baseline_drain if side == "baseline" else drain.chimeway_drain
        try:
            figures = run(env, n, processes, threads, label=label)
        finally:
            watcher.join(timeout=70)
            for proc in recorder:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        summary = summarize(out) if out.exists() else {"samples": 0}
        summary["per_second_while_profiled"] = figures["per_second"]
        summary["cpu_ms_per_delivery"] = figures["cpu_ms_per_delivery"]
        try:
            summary["sql"] = top_statements(env, n, sessions[0] if sessions else -1)
        except Exception as err:  # pg_stat_statements not loaded: the py-spy figures still stand
            summary["sql"] = {"error": f"{type(err).__name__}: {err}"}
        result[side] = summary
        say(f"profile {side}: {summary.get('samples')} samples; by area {summary.get('self_by_area_pct', [])[:6]}")
    return result
