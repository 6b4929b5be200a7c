"""Smoke run of benchmarks/hub_scale.py (issue 7, item 5).

The script runs in --smoke mode on the host (about 30 s): a barehub base from
`barehub install --no-start`, real traefik and hub, fake user servers. The JSON must
hold the expected rows with values a working harness gives. Timed goals are not
asserted here (the machine may be busy): they are the benchmarks' output.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import require_root
from helpers import REPO, report

BENCH = REPO / "benchmarks"


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

