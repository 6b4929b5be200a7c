"""benchmarks/check_scale.py still runs (`make bench` measures it at 1,000 users)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import require_root
from helpers import REPO


def test_check_scale_smoke(tmp_path):
    require_root()
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, "benchmarks/check_scale.py", "--smoke", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["users"] == 50 and result["empty_s"] > 0 and result["full_s"] > 0
    assert "| 50 |" in r.stdout and "50 users ÷ empty" in r.stdout
