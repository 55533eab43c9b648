"""Private servers for one harness run: a PostgreSQL cluster and a Redis, each on its own loopback port.

Both live in a temporary directory, can be stopped and started again (fault injection), and are
always torn down. PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` OS
user and every ``initdb`` / ``pg_ctl`` runs through ``runuser``. Durability is traded for speed
(fsync off): these clusters hold nothing worth keeping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.progress import say

PG_BIN = Path(os.environ.get("CHIMEWAY_HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
#: Ports the shared servers use: a private server never takes them, whatever the OS offers.
SHARED_PORTS = frozenset({5432, 6379})


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


class Reaper:
    """The clean-up safety net: a child process that cleans whatever is still registered when we die."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("reaper.py"))],
            stdin=subprocess.PIPE, text=True, start_new_session=True,
        )

    def tell(self, verb: str, arg: Any) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{verb} {arg}\n")
        self._proc.stdin.flush()

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=120)


def _as_postgres(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


class PrivatePostgres:
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1:<port>, trust auth, user ``postgres``."""

    def __init__(self, root: Path, reaper: Reaper, *, max_connections: int = 300,
                 settings: dict[str, str] | None = None) -> None:
        self.settings = dict(settings or {})  #: extra server settings (-c name=value)
        self.dir = root / "pg"
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.reaper = reaper
        self.max_connections = max_connections
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self.dir.mkdir(parents=True)
            shutil.chown(self.dir, PG_USER, PG_USER)
            _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER,
                         "--no-sync", "-E", "UTF8", "--locale=C")
            self.reaper.tell("pgdata", self.data)
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.dir}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            f"-c max_connections={self.max_connections}", "-c shared_buffers=256MB",
            "-c max_wal_size=4GB", "-c checkpoint_timeout=30min",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
        ])
        _as_postgres(str(PG_BIN / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                     "-o", options, "-w", "-t", "60")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        if self.running:
            _as_postgres(str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
            self.running = False

    def restart(self, downtime: float = 1.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(downtime)
        self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def connect(self, database: str = "postgres", autocommit: bool = True) -> Any:
        import psycopg2

        conn = psycopg2.connect(self.url(database))
        conn.autocommit = autocommit
        return conn

    def create_database(self, name: str, template: str | None = None) -> str:
        conn = self.connect()
        try:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.cursor().execute(f'CREATE DATABASE "{name}"{suffix}')
        finally:
            conn.close()
        return self.url(name)

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        self.reaper.tell("forget-pgdata", self.data)


class PrivateRedis:
    """A redis-server on 127.0.0.1:<port> with no persistence: a restart loses every key."""

    def __init__(self, root: Path, reaper: Reaper) -> None:
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.reaper = reaper
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no",
             "--maxclients", "4000", "--loglevel", "warning"],
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        self.reaper.tell("group", self.proc.pid)
        wait_for_port(self.port, 20)

    def stop(self) -> None:
        """SIGKILL: nothing is saved, every queued message is gone."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
            self.reaper.tell("forget-group", self.proc.pid)
            self.proc = None

    def restart(self, downtime: float = 0.5) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis.from_url(self.url(db))

    def close(self) -> None:
        self.stop()


@contextlib.contextmanager
def private_servers(
    prefix: str = "chimeway-harness-", pg_settings: dict[str, str] | None = None
) -> Iterator[tuple[Path, Reaper, PrivatePostgres, PrivateRedis]]:
    """A temporary root with a reaper, a started PostgreSQL and a started Redis; all gone afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    reaper = Reaper()
    reaper.tell("dir", root)
    pg = PrivatePostgres(root, reaper, settings=pg_settings)
    rd = PrivateRedis(root, reaper)
    try:
        started = time.monotonic()
        pg.start()
        rd.start()
        say(f"private PostgreSQL on 127.0.0.1:{pg.port}, Redis on 127.0.0.1:{rd.port} "
            f"({time.monotonic() - started:.1f}s) in {root}")
        yield root, reaper, pg, rd
    finally:
        rd.close()
        pg.close()
        reaper.close()
        shutil.rmtree(root, ignore_errors=True)
        say("private servers torn down")
