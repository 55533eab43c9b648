"""Supervised processes: workers and schedulers started in their own process group, killed, restarted.

Each process runs in a new session, so ``kill()`` SIGKILLs the whole group at once — a Dramatiq
master together with its forked worker processes, like a machine losing power. A watcher thread
restarts whatever died (after ``restart_delay``) until ``stop_all()``. Output goes to one log file per
process under the run's directory; ``tail()`` shows the end of it when something goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.progress import say
from tests.harness.servers import Reaper


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU (user + system) the process has used; with ``children``, also its exited, reaped children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a server and everything it forked, live or exited (a PostgreSQL postmaster and its backends)."""
    return cpu_seconds(pid, children=True) + sum(cpu_seconds(child) for child in children_of(pid))


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM) in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: str
    keep_alive: bool = True
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    died_at: float | None = None
    started_at: float = 0.0
    quick_deaths: int = 0  #: exits on its own soon after starting, in a row: restarts back off
    pids_seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, root: Path, reaper: Reaper, cwd: str, restart_delay: float = 0.5) -> None:
        self.root = root
        self.reaper = reaper
        self.cwd = cwd
        self.restart_delay = restart_delay
        self.processes: dict[str, Process] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.unexpected_exits = 0

    def add(self, name: str, argv: list[str], env: dict[str, str], keep_alive: bool = True) -> Process:
        process = Process(name, argv, env, self.root / f"{name}.log", self.cwd, keep_alive)
        self.processes[name] = process
        return process

    def start(self, name: str) -> Process:
        with self._lock:
            process = self.processes[name]
            log = open(process.log, "ab")  # noqa: SIM115 - handed to the child
            process.proc = subprocess.Popen(
                process.argv, env=process.env, cwd=process.cwd, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            log.close()
            process.starts += 1
            process.died_at = None
            process.started_at = time.monotonic()
            self.reaper.tell("group", process.proc.pid)
            return process

    def start_all(self) -> None:
        for name in self.processes:
            self.start(name)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._watcher.start()

    def remember_pids(self) -> None:
        """Note every pid of every group (the workers Dramatiq forked), to tell whose calls were cut."""
        with self._lock:
            for process in self.processes.values():
                if process.alive() and process.pid is not None:
                    process.pids_seen.update(group_pids(process.pid))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Signal the whole group of ``name``; returns the pids that were in it."""
        with self._lock:
            process = self.processes[name]
            if not process.alive() or process.pid is None:
                return []
            pids = group_pids(process.pid)
            process.pids_seen.update(pids)
            with contextlib.suppress(OSError):
                os.killpg(process.pid, sig)
            if sig == signal.SIGKILL:
                process.kills += 1
                process.proc.wait(timeout=10)  # type: ignore[union-attr]
                self.reaper.tell("forget-group", process.pid)
                process.died_at = time.monotonic()
            return pids

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                for process in self.processes.values():
                    if process.proc is None or process.alive() or not process.keep_alive:
                        continue
                    if process.died_at is None:  # died on its own, not by our hand
                        self.unexpected_exits += 1
                        process.died_at = time.monotonic()
                        quick = process.died_at - process.started_at < 5
                        process.quick_deaths = process.quick_deaths + 1 if quick else 0
                        if process.quick_deaths <= 2:
                            say(f"{process.name} exited on its own (code {process.proc.returncode}); "
                                f"log tail:\n{self.tail(process.name, 8)}")
                    delay = self.restart_delay * 2 ** min(process.quick_deaths, 5)
                    if time.monotonic() - process.died_at >= delay and not self._stopping.is_set():
                        self.start(process.name)

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after ``timeout``."""
        process = self.processes[name]
        process.keep_alive = False
        if process.proc is None:
            return
        if process.alive():
            with contextlib.suppress(OSError):
                os.killpg(process.proc.pid, signal.SIGTERM)
            try:
                process.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"{name} ignored SIGTERM for {timeout:.0f}s: SIGKILL")
        with contextlib.suppress(OSError):
            os.killpg(process.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.proc.wait(timeout=10)
        self.reaper.tell("forget-group", process.proc.pid)

    def stop_all(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for name in list(self.processes):
            self.stop(name, timeout)

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.processes[name].log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
