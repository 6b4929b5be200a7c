"""The gate (barehub.gate) on a base written by `barehub install --no-start`: what it must
never do (write the base, start a managed service) and what every entry point shares."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, version
from test_install import snapshot

SRC = REPO / "src"


def barehub(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "barehub", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture
def installed(base):
    r = barehub("install", "--base", str(base), "--prefix", str(base / "envs" / version()), "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    return base


def full_snapshot(base: Path) -> dict[str, tuple]:
    """Content, mode and mtime of everything in the base (the rules file and db included)."""
    out = {}
    for p in sorted(base.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(base))] = (st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


def test_check_writes_nothing_in_the_base_and_starts_no_service(installed, tmp_path):
    base = installed
    # a database with a user in it, as a running hub leaves it
    db = sqlite3.connect(base / "state" / "jupyterhub.sqlite")
    db.execute("create table site_notes (note text)")
    db.commit()
    db.close()
    marker = f"barehub-gate-{os.getpid()}"
    (base / "jupyterhub_config.d" / "20-site.py").write_text(
        f'c.JupyterHub.services = [{{"name": "sleeper", "command": ["/bin/sh", "-c", "sleep 30 # {marker}"]}}]\n'
        'c.JupyterHub.load_roles = [{"name": "sleeper", "services": ["sleeper"], "scopes": ["list:users"]}]\n'
        'c.JupyterHub.load_groups = {"staff": {"users": []}}\n')
    before = full_snapshot(base)
    r = barehub("check", "--base", str(base))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "JupyterHub's start-up accepts them" in r.stdout
    time.sleep(0.5)
    assert full_snapshot(base) == before, "check wrote into the base"
    assert not (base / "state" / "proxy" / "rules" / "jupyterhub.toml").exists(), "the proxy set itself up"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1, "a service was started"


def test_install_rerun_refuses_what_check_refuses_and_changes_nothing(installed):
    base = installed
    case = REPO / "tests" / "config_corpus" / "broken" / "11-role-unknown-scope.py"
    (base / "jupyterhub_config.d" / case.name).write_text(case.read_text())
    check = barehub("check", "--base", str(base))
    before = snapshot(base)
    r = barehub("install", "--base", str(base), "--prefix", str(base / "envs" / version()), "--no-start")
    assert check.returncode == 1 and r.returncode == 1
    problem = next(line for line in check.stderr.splitlines() if line.startswith("error: "))
    assert problem in r.stderr, "install refuses with the same finding as check"
    assert "Nothing was changed" in r.stderr
    assert snapshot(base) == before


def test_reload_runs_the_gate(installed):
    unit = (installed / "generated" / "jupyterhub.service").read_text()
    reload = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert reload[0].endswith(f"/bin/python -m barehub check --base={installed}"), reload
    assert "stop-services" in next(line for line in unit.splitlines() if line.startswith("ExecStopPost=-"))
