"""``pip install chimeway`` into a fresh virtualenv, no extras (and with ``[crypto,metrics]``), then
``chimeway demo``: what a new user does first. The demo must not need the test extras (pytest)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("extras", ["", "[crypto,metrics]"])
def test_given_a_fresh_virtualenv_without_test_extras_when_running_the_demo_then_it_completes(tmp_path, extras):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the working tree
    source.mkdir()
    for name in ("chimeway", "adapters"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{source}{extras}"],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    no_pytest = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True)
    assert no_pytest.returncode != 0, "the fresh virtualenv must not have pytest"

    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    demo = subprocess.run([str(venv / "bin" / "chimeway"), "demo", "--count", "60"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "Chimeway demo — summary" in demo.stdout
    status = subprocess.run([str(venv / "bin" / "chimeway"), "status", "--json"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)
    report = json.loads(status.stdout)
    assert report["stalled"] == 0
    assert report["open"] == {"pending": 0, "dispatched": 0, "failed": 0}
