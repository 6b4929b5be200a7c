"""Run every barehub benchmark, print their tables, write one JSON file (make bench).

Each benchmark is a script in this directory that takes ``--smoke`` and
``--json PATH`` and prints a markdown table:

- proxy_bench.py   data path and route scale: barehub's proxy vs CHP vs direct
- availability.py  what users see while the hub or the proxy restarts
- hub_scale.py     the hub with many users and servers
- check_scale.py   `barehub check` (the gate every reload runs) with many users

    python benchmarks/run_all.py                 # all, results in build/bench/results-<UTC time>.json
    python benchmarks/run_all.py --smoke         # seconds each: checks they all still run
    python benchmarks/run_all.py --only proxy    # one of them (name without _bench/.py)
    python benchmarks/run_all.py -- --n 1,1000   # extra arguments for every script
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = {"proxy": "proxy_bench.py", "availability": "availability.py", "hub_scale": "hub_scale.py",
           "check_scale": "check_scale.py"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every benchmark runs")
    ap.add_argument("--only", action="append", choices=sorted(SCRIPTS), help="run only these (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench", help="directory for the results JSON")
    ap.add_argument("extra", nargs="*", help="arguments passed to every script (after --)")
    args = ap.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results: dict[str, object] = {"started": stamp, "smoke": args.smoke, "benchmarks": {}}
    failed = []
    with tempfile.TemporaryDirectory(prefix="barehub-bench-") as tmp:
        for name in args.only or list(SCRIPTS):
            script = HERE / SCRIPTS[name]
            if not script.exists():
                print(f"\n## {name}: {script.name} is not there yet, skipped\n", flush=True)
                results["benchmarks"][name] = {"skipped": f"{script.name} missing"}
                continue
            out = Path(tmp) / f"{name}.json"
            argv_ = [sys.executable, str(script), "--json", str(out)] + (["--smoke"] if args.smoke else []) + args.extra
            print(f"\n## {name} ({script.name})\n", flush=True)
            t0 = time.monotonic()
            rc = subprocess.run(argv_, cwd=ROOT).returncode
            took = time.monotonic() - t0
            entry: dict[str, object] = {"returncode": rc, "seconds": round(took, 1)}
            if out.exists():
                entry["result"] = json.loads(out.read_text())
            if rc != 0 or not out.exists():
                failed.append(name)
            results["benchmarks"][name] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"results-{stamp}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults: {path}")
    if failed:
        print(f"failed: {', '.join(failed)} (see the output above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
