"""The chaos harness, small: a few hundred deliveries and a few of each fault, inside ``make test``.

It runs ``python -m tests.chaos --small`` as a child process (private PostgreSQL and Redis of its
own, never the shared servers) and reads its one JSON line. No time is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("CHIMEWAY_HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL server binaries not installed"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
    pytest.mark.skipif(shutil.which("runuser") is None or os.geteuid() != 0,
                       reason="the private cluster runs as the postgres user through runuser, which needs root"),
]


def test_given_faults_during_a_small_run_when_it_quiesces_then_every_invariant_holds() -> None:
    # Given: a clean environment (no CHIMEWAY_* settings leak into the harness)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHIMEWAY_")}

    # When: the small configuration runs to quiescence
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--small"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )

    # Then: it printed its JSON line, and no invariant was violated
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line; exit {proc.returncode}; stderr tail:\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, f"{result['error']}\nstderr tail:\n{proc.stderr[-4000:]}"
    assert result["invariants"], result
    assert result["violations"] == {}, json.dumps(result, indent=1, sort_keys=True)
    assert result["faults"]["kills"] > 0 and result["faults"]["redis_restarts"] == 1
    assert result["faults"]["pg_restarts"] == 1
    assert proc.returncode == 0
