"""The benchmarks still run: each script of benchmarks/ in its --smoke mode (tiny sizes, seconds).

Timed goals are not asserted here (the machine may be busy): they are what
`make bench` prints. These only keep the scripts from rotting, and check that
the numbers they produce are ones a working harness gives.

- proxy_bench.py, through run_all.py as `make bench` runs it: barehub's proxy
  (traefik from barehub's rendered traefik.toml), CHP from
  benchmarks/node_modules and the nginx backend directly;
- availability.py and hub_scale.py on the host: a base from
  `barehub install --no-start`, real traefik and hub, fake user servers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_root
from helpers import REPO, report

BENCH = REPO / "benchmarks"
CHP = BENCH / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"


def run_smoke(script: str, tmp_path) -> dict:
    require_root()
    out = tmp_path / f"{script}.json"
    r = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke", "--json", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"{script} --smoke failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert "| goal |" in r.stdout, r.stdout  # the markdown table
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke"
    return result


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
    bursts = [row for row in rows if row["mode"] == "burst"]
    assert {(row["target"], row["k"]) for row in bursts} == {(t, k) for t in ("barehub", "chp") for k in (3, 10)}
    for row in bursts:
        assert 0 < row["median_servable_ms"] <= row["all_servable_ms"] and row["all_returned_ms"] > 0, row
    assert "| N | K | proxy | all servable ms |" in result["table"]


def test_availability_smoke(tmp_path):
    result = run_smoke("availability", tmp_path)
    rows = {r["operation"]: r for r in result["rows"]}
    assert sorted(rows) == ["restart hub (host: stop, start)", "restart proxy (host: stop, start)"]
    hub, proxy = rows["restart hub (host: stop, start)"], rows["restart proxy (host: stop, start)"]
    for r in (hub, proxy):
        report(f"availability smoke, {r['operation']}: {r['failed_requests']}/{r['requests']} failed, "
               f"refused {r['refused_s']} s, websocket dropped {r['ws_dropped']}, hub API down {r['hub_api_down_s']} s")
        assert r["requests"] >= 5 and r["ws_messages"] >= 3, r
        assert isinstance(r["goal_met"], bool)
    # the hub restart really took the hub API away, and the probes kept users served
    assert hub["hub_api_down_s"] > 0 and hub["hub_api_back_after_s"] >= hub["hub_api_down_s"] - 0.5
    assert hub["failed_requests"] == 0 and hub["ws_dropped"] == 0, hub
    # a proxy restart is seen: connections refused for a while, the open websocket dropped
    assert proxy["refused_requests"] > 0 and proxy["refused_s"] > 0, proxy
    assert proxy["ws_dropped"] == 1, proxy


def test_hub_scale_smoke(tmp_path):
    result = run_smoke("hub_scale", tmp_path)
    (row,) = result["rows"]
    report(f"hub_scale smoke: {row['users']} users, restart to API {row['restart_to_api_s']} s, "
           f"{row['probe_failed']}/{row['probe_requests']} probes failed")
    assert row["users"] == row["servers"] == 20 and row["populate"] == "api"
    assert row["servers_running_after"] == 20, "the restarted hub re-adopted every server"
    assert row["init_spawners_n"] == 20
    assert 0 < row["start_to_api_s"] < row["restart_to_api_s"] < 120
    assert row["probe_requests"] >= 20 and row["servers_probed"] == 20
    assert row["probe_failed"] == 0, row["probe_failures_sample"]
    assert isinstance(row["goal_met"], bool)
    assert 0 < row["empty_restart_to_api_s"] and row["restart_ratio"] > 0 and isinstance(row["ratio_goal_met"], bool)
