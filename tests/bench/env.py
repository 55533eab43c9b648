"""The bench's world: its configuration, the private servers, the supervisor and fresh databases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.processes import Supervisor
from tests.harness.servers import PrivatePostgres, PrivateRedis, Reaper

TEMPLATE = "chimeway_template"


@dataclass
class BenchConfig:
    n: int = 20_000  #: deliveries drained by the baseline and by Chimeway
    #: drain rounds, baseline then Chimeway each time; the ratio reported is the median round's
    rounds: int = 3
    processes: int = 2
    threads: int = 8
    latency_rate: float = 100.0  #: sends per second for the commit → terminal latency
    latency_seconds: float = 15.0
    latency_high_rate: float = 1000.0  #: a second commit → terminal measure at this rate (0: skip)
    compare_unbatched: int = 1  #: 1: each drain round also drains with group commit off (the "before")
    scale_n: int = 10_000  #: deliveries per run of the 1 / 2 / 4 process scaling
    scale_processes: tuple[int, ...] = (1, 2, 4)
    ingest_events: int = 3_000  #: webhook events through handle(), single process
    wsgi_seconds: float = 10.0  #: load on the WSGI app
    wsgi_clients: int = 16  #: concurrent keep-alive connections of the load generator
    reconcile_events: int = 100_000
    reconcile_orphans: int = 20_000
    reconcile_scale: tuple[int, ...] = (10_000, 20_000, 40_000)
    profile_n: int = 8_000  #: deliveries drained under py-spy (0: no profile)
    console_deliveries: int = 1_000_000  #: rows under the console's list and search
    send_many_n: int = 20_000  #: deliveries recorded by send_many, and by one-by-one send() to compare
    priority_bulk_n: int = 20_000  #: the bulk backlog the high-priority sends must overtake
    priority_sends: int = 100  #: high-priority sends, at priority_rate per second, while it drains
    priority_rate: float = 10.0
    sweep_lost: int = 20_000  #: lost deliveries one sweep re-enqueues (recovery after a Redis loss)
    drain_timeout: float = 600.0
    scale_sizes: tuple[int, ...] = (1_000_000,)  #: deliveries loaded per scale run (add 10000000 for the full figure)
    scale_drain_n: int = 5_000  #: fresh sends drained on the loaded and on an empty database (0: skip)
    scale_drain_rounds: int = 6  #: rounds of (loaded, empty) drains, which goes first alternating; the median round's ratio
    id_rows: int = 1_000_000  #: rows inserted per key type, UUIDv4 against UUIDv7 (0: skip)
    #: CHIMEWAY_RATE_LIMITS for one more Chimeway drain per round (``fake=100000/1``: a limit above the
    #: throughput, so the figure is the cost of the check); empty: that drain is skipped
    drain_rate_limit: str = ""
    sections: tuple[str, ...] = ("drain", "latency", "scaling", "profile", "ingest", "wsgi", "reconcile",
                                 "console", "send_many", "priority", "sweep")
    #: Worker settings for Chimeway (CHIMEWAY_<NAME>): the same on every run.
    worker_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchEnv:
    cfg: BenchConfig
    root: Path
    reaper: Reaper
    pg: PrivatePostgres
    rd: PrivateRedis
    sup: Supervisor

    def prepare_template(self) -> None:
        """One migrated database that every run copies (CREATE DATABASE … TEMPLATE is fast)."""
        conn = self.pg.connect()
        try:  # where the profile reads the workers' SQL from (loaded only when the library is installed)
            conn.cursor().execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except Exception:
            pass
        finally:
            conn.close()
        self.migrate(self.pg.create_database(TEMPLATE))

    def fresh_database(self, name: str) -> str:
        self.pg.drop_database(name)
        return self.pg.create_database(name, template=TEMPLATE)

    def database_at(self, name: str, version: int) -> str:
        """A new database with only the first ``version`` migrations applied (to be filled, then upgraded)."""
        self.pg.drop_database(name)
        url = self.pg.create_database(name)
        self.migrate(url, to=version)
        return url

    def migrate(self, url: str, to: int | None = None) -> float:
        """Apply Chimeway's migrations (up to version ``to``) to the database at ``url``; the seconds it took."""
        from chimeway.db import connect
        from chimeway.store.migrator import migrate
        from chimeway.wiring.config import load_settings

        database = connect(load_settings(environ={}, database_url=url))
        try:
            started = time.monotonic()
            migrate(database, to=to)
            return round(time.monotonic() - started, 2)
        finally:
            database.close_all()

    def drop_database(self, name: str) -> None:
        self.pg.drop_database(name)
