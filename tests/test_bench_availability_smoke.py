"""Smoke run of benchmarks/availability.py (issue 7, item 2).

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

