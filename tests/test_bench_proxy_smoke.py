"""The proxy benchmark still runs: benchmarks/proxy_bench.py with tiny sizes (seconds, not numbers to trust).

The timed goals live in benchmarks/ (make bench); this only keeps the script
from rotting. It goes through benchmarks/run_all.py, the runner `make bench`
uses: barehub's proxy (traefik from barehub's rendered traefik.toml), CHP from
benchmarks/node_modules and the nginx backend directly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHP = REPO / "benchmarks" / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"


def test_proxy_benchmark_smoke(tmp_path):
    missing = [what for what, ok in (
        ("wrk (make apt-deps)", shutil.which("wrk")),
        ("nginx-light (make apt-deps)", Path("/usr/sbin/nginx").exists()),
        ("node (Node.js 20)", shutil.which("node")),
        (f"{CHP} (make bench-npm)", CHP.exists()),
    ) if not ok]
    if missing:
        pytest.fail("the proxy benchmark smoke test needs: " + ", ".join(missing) + " - `make test-deps` installs them")
    r = subprocess.run([sys.executable, "benchmarks/run_all.py", "--smoke", "--only", "proxy", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = tmp_path.glob("results-*-smoke.json")
    result = json.loads(path.read_text())["benchmarks"]["proxy"]["result"]
    rows = result["rows"]
    for target in ("direct", "barehub", "chp"):
        loads = [row for row in rows if row["target"] == target and row["mode"] in ("route", "mix")]
        assert loads and all(row["rps"] > 0 and not row.get("error") for row in loads), (target, loads)
    control = [row for row in rows if row["mode"] == "control"]
    assert {row["target"] for row in control} == {"barehub", "chp"}
    for row in control:
        assert row["add_servable_ms"] > 0 and row["delete_gone_ms"] > 0 and row["get_all_routes_cold_ms"] > 0, row
    assert "| N | load | target | req/s |" in r.stdout and "add_route servable ms" in result["table"]
