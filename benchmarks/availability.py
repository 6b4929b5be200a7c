#!/usr/bin/env python3
"""Availability of users' servers while the hub or the proxy restarts (issue 7, item 2).

barehub as an admin installs it: the test installer, run offline with `-b` in a
Debian container booted with systemd-nspawn (tests/container.py), a user (alice)
with a running JupyterLab server. For each operation below, three probes run in
the container's network namespace:

- http: GET /user/alice/api/status through traefik every 50 ms;
- hub:  GET /hub/api/ through traefik every 50 ms (the hub API's downtime);
- ws:   one kernel websocket, a kernel_info_request every 100 ms (tests/probes.py).

Operations (rows): `systemctl restart jupyterhub`, `systemctl reload jupyterhub`,
an upgrade to the next release that leaves the proxy's configuration unchanged
(the second installer is built like tests/system/test_upgrade.py does), and
`systemctl restart jupyterhub-proxy`.

Goals: 0 failed requests and 0 dropped websockets for the hub restart, the reload
and the upgrade; a proxy restart refuses connections for at most 1 s (its open
websocket is dropped, which a proxy restart cannot avoid: counted, not a miss).

    python benchmarks/availability.py [--smoke] [--json PATH]

--smoke runs on the host instead (no container, no installer): barehub's base from
`barehub install --no-start`, traefik and the hub from the units' ExecStart lines, a fake
user server with a kernel websocket (benchmarks/fake_singleuser.py); rows: hub restart and
proxy restart. It checks the harness and gives the proxy-restart number in ~30 s.
Exit status: 0 when the run completed (goals missed or not), 1 on a harness error.
Needs root, systemd-nspawn, debootstrap, zstd (like `make test`'s system tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "tests", REPO / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

HTTP_INTERVAL = 0.05
WS_INTERVAL = 0.1
SETTLE = 2.0  # seconds of probing after the hub is back, so late failures are seen
URL = "http://127.0.0.1"
BASE = "/opt/barehub"
GOAL_PROXY_REFUSED = 1.0


# --------------------------------------------------------------------------- the probe (a subprocess)

def classify(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "refused"
    if isinstance(reason, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timeout"
    return type(reason).__name__


def probe_main(argv) -> None:
    """`availability.py probe URL --out F --stop-file S`: one JSON line per request."""
    p = argparse.ArgumentParser(prog="availability.py probe")
    p.add_argument("url")
    p.add_argument("--token")
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval", type=float, default=HTTP_INTERVAL)
    p.add_argument("--duration", type=float, default=600)
    a = p.parse_args(argv)
    headers = {"Authorization": f"token {a.token}"} if a.token else {}
    t0 = time.monotonic()
    with open(a.out, "a") as out:
        while not os.path.exists(a.stop_file) and time.monotonic() - t0 < a.duration:
            start = time.time()
            try:
                with urllib.request.urlopen(urllib.request.Request(a.url, headers=headers), timeout=2) as r:
                    r.read()
                    code: int | str = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except Exception as e:  # noqa: BLE001 - every error is a recorded failure
                code = classify(e)
            out.write(json.dumps({"t": round(start, 3), "code": code}) + "\n")
            out.flush()
            time.sleep(a.interval)
        out.write(json.dumps({"summary": True}) + "\n")


# --------------------------------------------------------------------------- analysis

def outages(records: list[dict], ok=lambda r: r.get("code") == 200) -> list[tuple[float, float, list]]:
    """(start, end, codes) of each run of failed records; end = time of the next good one."""
    runs, cur = [], None
    for r in records:
        if ok(r):
            if cur:
                runs.append((cur[0], r["t"], cur[2]))
                cur = None
        elif cur:
            cur[2].append(r.get("code", r.get("result")))
        else:
            cur = [r["t"], None, [r.get("code", r.get("result"))]]
    if cur:
        runs.append((cur[0], records[-1]["t"], cur[2]))
    return runs


def summarize(name: str, results: dict, t_action: float, back_after: float) -> dict:
    http = results["http"]
    hub = results["hub"]
    ws_records, ws_summary = results["ws"]
    failed = [r for r in http if r["code"] != 200]
    refused = [r for r in failed if r["code"] == "refused"]
    refused_runs = outages(http, ok=lambda r: r["code"] != "refused")
    hub_runs = [o for o in outages(hub) if o[1] >= t_action]
    return {
        "operation": name,
        "requests": len(http),
        "failed_requests": len(failed),
        "failure_kinds": sorted({str(r["code"]) for r in failed}),
        # how long connections were refused: first refused attempt until the next accepted one
        "refused_s": round(max((end - start for start, end, _ in refused_runs), default=0.0), 2),
        "refused_requests": len(refused),
        "outage_s": round(max((end - start for start, end, _ in outages(http)), default=0.0), 2),
        "ws_messages": ws_summary["ok"] + ws_summary["failed"],
        "ws_failed": ws_summary["failed"],
        "ws_dropped": int(bool(ws_summary["closed"])),
        "hub_api_down_s": round(max((end - start for start, end, _ in hub_runs), default=0.0), 2),
        "hub_api_back_after_s": round(back_after, 2),
    }


# --------------------------------------------------------------------------- the container

class Bench:
    def __init__(self, workdir: Path, log=print):
        import container as ct
        from system.test_systemd import Hub

        self.ct_mod = ct
        self.work = workdir
        self.log = log
        reason = self._unusable()
        if reason:
            raise SystemExit(f"availability benchmark cannot run: {reason}")
        ct.reap_stale()
        tarball = ct.build_rootfs()
        self.c = ct.Container(f"bh-avail-{os.getpid()}", tarball, private_network=True)
        self.c.boot()
        self.hub = Hub(self.c)
        self.user_token = ""

    def _unusable(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (systemd-nspawn, cgroups)"
        missing = [t for t in ("systemd-nspawn", "debootstrap", "zstd", "nsenter") if not shutil.which(t)]
        if missing:
            return f"missing {' '.join(missing)}: apt-get install systemd-container debootstrap zstd"
        return None

    def diagnostics(self) -> str:
        r = self.c.exec("systemctl --no-pager status jupyterhub jupyterhub-proxy | tail -40; "
                        "journalctl --no-pager -n 40 -u jupyterhub -u jupyterhub-proxy", check=False)
        return r.stdout + r.stderr

    def close(self):
        self.c.destroy()

    def install(self, installer: Path) -> float:
        from helpers import wait_for
        from system.test_systemd import DRIVER_CONFIG, USER

        c, hub = self.c, self.hub
        c.push(installer, "/root")
        c.exec(["useradd", "--create-home", "--shell", "/bin/bash", USER])
        t0 = time.monotonic()
        r = c.exec(["bash", f"/root/{installer.name}", "-b"], check=False, timeout=600)
        took = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"installer -b failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        self.log(f"installer -b took {took:.0f}s")
        try:
            wait_for(hub.up, 120, what="hub through the proxy")
        except TimeoutError:
            raise RuntimeError("hub not reachable after the install:\n" + self.diagnostics()) from None
        pid = hub.main_pid("jupyterhub.service")
        hub.write(f"{BASE}/jupyterhub_config.d/20-driver.py", DRIVER_CONFIG)
        hub.systemctl("reload", "jupyterhub")
        wait_for(lambda: hub.main_pid("jupyterhub.service") not in (0, pid) and hub.up(), 60, what="hub reloaded")
        code, body = hub.curl(f"/hub/api/users/{USER}/server", "-X", "POST", timeout=120)
        if code not in (201, 202):
            raise RuntimeError(f"cannot start {USER}'s server: {code} {body}")
        wait_for(lambda: hub.server().get("ready"), 120, what=f"{USER}'s server")
        code, body = hub.api(f"/users/{USER}/tokens", "POST", {"note": "bench", "expires_in": 7200})
        if code != 201:
            raise RuntimeError(f"cannot make a token for {USER}: {code} {body}")
        self.user_token = body["token"]
        return took

    # ---------------------------------------------------------------- probes
    url = URL

    @property
    def user(self) -> str:
        from system.test_systemd import USER

        return USER

    def wrap(self, argv: list[str]) -> list[str]:
        """Run a probe where the proxy is reachable: the container's network namespace."""
        return self.c.host_netns_cmd(argv)

    def start_probes(self, tag: str):
        from helpers import wait_for

        USER, URL = self.user, self.url
        d = self.work / tag
        d.mkdir(parents=True, exist_ok=True)
        stop = d / "stop"
        procs = {}
        me = [sys.executable, str(Path(__file__).resolve()), "probe"]
        specs = {
            "http": me + [f"{URL}/user/{USER}/api/status", "--token", self.user_token],
            "hub": me + [f"{URL}/hub/api/"],
            "ws": [sys.executable, str(REPO / "tests" / "probes.py"), "ws", f"{URL}/user/{USER}/",
                   "--token", self.user_token, "--interval", str(WS_INTERVAL)],
        }
        for kind, argv in specs.items():
            out = d / f"{kind}.jsonl"
            argv = argv + ["--out", str(out), "--stop-file", str(stop)]
            if kind != "ws":
                argv += ["--interval", str(HTTP_INTERVAL)]
            procs[kind] = (out, subprocess.Popen(self.wrap(argv), stderr=subprocess.PIPE, text=True))

        def started(kind):
            out, p = procs[kind]
            if p.poll() is not None:
                raise RuntimeError(f"{kind} probe exited: {p.stderr.read()}")
            text = out.read_text() if out.exists() else ""
            return '"code": 200' in text or '"result": "ok"' in text

        for kind in procs:
            wait_for(lambda: started(kind), 60, interval=0.1, what=f"{kind} probe to succeed once")
        time.sleep(0.5)
        return stop, procs

    def finish_probes(self, stop: Path, procs) -> dict:
        from probes import read_results

        stop.touch()
        results = {}
        for kind, (out, p) in procs.items():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if kind == "ws":
                records, summary = read_results(out)
                if summary is None:
                    raise RuntimeError(f"ws probe died: {p.stderr.read()}")
                results[kind] = (records, summary)
            else:
                records = [json.loads(line) for line in out.read_text().splitlines()]
                if not records or "summary" not in records[-1]:
                    raise RuntimeError(f"{kind} probe died: {p.stderr.read()}")
                results[kind] = records[:-1]
        return results

    # ---------------------------------------------------------------- operations
    def measure(self, name: str, action, wait_back) -> dict:
        """Probes on; action(); wait until wait_back() holds; SETTLE s more; probes off."""
        from helpers import wait_for

        stop, procs = self.start_probes(name.replace(" ", "-"))
        t_action = time.time()
        t0 = time.monotonic()
        action()
        wait_for(wait_back, 120, interval=0.05, what=f"the hub back after {name}")
        back = time.monotonic() - t0
        time.sleep(SETTLE)
        row = summarize(name, self.finish_probes(stop, procs), t_action, back)
        self.log(f"  {name}: {json.dumps(row)}")
        return row

    def hub_restarted(self, old_pid: int):
        return lambda: self.hub.main_pid("jupyterhub.service") not in (0, old_pid) and self.hub.up()

    def hub_restart(self) -> dict:
        pid = self.hub.main_pid("jupyterhub.service")
        return self.measure("systemctl restart jupyterhub",
                            lambda: self.hub.systemctl("restart", "jupyterhub"), self.hub_restarted(pid))

    def hub_reload(self) -> dict:
        pid = self.hub.main_pid("jupyterhub.service")
        return self.measure("systemctl reload jupyterhub",
                            lambda: self.hub.systemctl("reload", "jupyterhub"), self.hub_restarted(pid))

    def upgrade(self, installer: Path) -> dict:
        self.c.push(installer, "/root")
        hub_pid = self.hub.main_pid("jupyterhub.service")
        proxy_pid = self.hub.main_pid("jupyterhub-proxy.service")

        def run():
            r = self.c.exec(["bash", f"/root/{installer.name}", "-b"], check=False, timeout=600)
            if r.returncode:
                raise RuntimeError(f"upgrade failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")

        row = self.measure("upgrade (proxy config unchanged)", run, self.hub_restarted(hub_pid))
        row["proxy_restarted"] = self.hub.main_pid("jupyterhub-proxy.service") != proxy_pid
        return row

    def proxy_restart(self) -> dict:
        pid = self.hub.main_pid("jupyterhub-proxy.service")

        def back():
            return self.hub.main_pid("jupyterhub-proxy.service") not in (0, pid) and self.hub.up()

        return self.measure("systemctl restart jupyterhub-proxy",
                            lambda: self.hub.systemctl("restart", "jupyterhub-proxy"), back)


class HostBench(Bench):
    """--smoke: the same probes and analysis, on the host, in seconds instead of minutes.

    barehub's base is written by `barehub install --no-start` (the real traefik.toml and
    hidden hub config, as benchmarks/hub_scale.py does), traefik and the hub run with the
    units' ExecStart lines, and one user's server is played by benchmarks/fake_singleuser.py
    (with a pretend kernel websocket). "Restarts" are stop-then-start of those processes, as
    systemd does; the proxy unit's ExecStartPre (render-proxy) is not run, so a real
    `systemctl restart jupyterhub-proxy` refuses connections a little longer.
    """

    def __init__(self, workdir: Path, log=print):
        import hub_scale

        self.work, self.log = workdir, log
        self.s = hub_scale.Setup(workdir / "host", log)
        self.url = self.s.url

    @property
    def user(self) -> str:
        return "u00000"

    def wrap(self, argv):
        return argv

    def install(self, installer=None) -> float:
        import hub_scale
        from helpers import wait_for

        t0 = time.monotonic()
        s = self.s
        s.install()
        s.start_fake()
        s.start("proxy")
        s.start("hub")
        wait_for(s.api_up, 60, what="hub API through traefik")
        hub_scale.populate(s, [self.user], self.log)
        self.user_token = s.token
        return time.monotonic() - t0

    def close(self):
        self.s.stop_all()

    def hub_restart(self) -> dict:
        def act():
            self.s.procs["hub"].stop(30)
            self.s.start("hub")
        return self.measure("restart hub (host: stop, start)", act, self.s.api_up)

    def proxy_restart(self) -> dict:
        def act():
            self.s.procs["proxy"].stop(30)
            self.s.start("proxy")
        return self.measure("restart proxy (host: stop, start)", act, self.s.api_up)


# --------------------------------------------------------------------------- building installers

def build_installers(smoke: bool, tmp: Path, log, first: Path | None = None) -> tuple[Path, Path | None]:
    """This checkout's test installer (`make test-installer`), and in full mode the next
    release's (built from a copy of the sources, as tests/system/test_upgrade.py does)."""
    from helpers import version

    t0 = time.monotonic()
    if first is None:
        subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "test-installer"], check=True,
                       stdout=subprocess.DEVNULL)
        first = REPO / "build" / "test-installer" / f"barehub-{version()}-Linux-x86_64.sh"
    nxt = None
    if not smoke:
        from system.test_upgrade import build_next_release

        # the build tools print to stdout: keep it for the table
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            nxt = build_next_release(tmp)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    log(f"installers ready in {time.monotonic() - t0:.0f}s")
    return first, nxt


# --------------------------------------------------------------------------- report

def goal_met(row: dict) -> bool:
    if "proxy" in row["operation"] and "restart" in row["operation"]:
        return row["refused_s"] <= GOAL_PROXY_REFUSED
    return row["failed_requests"] == 0 and row["ws_dropped"] == 0 and row["ws_failed"] == 0


def table(rows: list[dict]) -> str:
    head = ("| operation | requests | failed | refused (s) | longest outage (s) | ws msgs | ws failed "
            "| ws dropped | hub API down (s) | goal |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['operation']} | {r['requests']} | {r['failed_requests']}"
                     f"{' (' + ', '.join(r['failure_kinds']) + ')' if r['failure_kinds'] else ''} | "
                     f"{r['refused_s']:.2f} | {r['outage_s']:.2f} | {r['ws_messages']} | {r['ws_failed']} | "
                     f"{r['ws_dropped']} | {r['hub_api_down_s']:.2f} | {'met' if r['goal_met'] else 'MISSED'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["probe"]:
        probe_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="on the host, hub and proxy restart only, with a fake server (~30 s)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--installer", type=Path,
                    help="install this test installer instead of building this checkout's")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args(argv)

    def log(msg):
        print(f"availability: {msg}", file=sys.stderr, flush=True)

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="barehub-bench-avail-", dir="/var/tmp"))
    bench = None
    try:
        if args.smoke:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            bench = HostBench(work, log)
            took = bench.install()
            log(f"host base ready in {took:.0f}s; one fake server running")
            rows = [bench.hub_restart(), bench.proxy_restart()]
        else:
            first, nxt = build_installers(False, work / "next", log, args.installer)
            log("booting a container")
            bench = Bench(work, log)
            took = bench.install(first)
            log(f"installed with -b in {took:.0f}s; alice's server is running")
            rows = [bench.hub_restart(), bench.hub_reload(), bench.upgrade(nxt), bench.proxy_restart()]
        for r in rows:
            r["goal_met"] = goal_met(r)
    except Exception as e:  # noqa: BLE001 - a harness error: say what, exit 1
        import traceback

        traceback.print_exc()
        log(f"harness error: {e}")
        return 1
    finally:
        if bench is not None:
            bench.close()
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "availability",
        "mode": "smoke" if args.smoke else "full",
        "probe_interval_s": {"http": HTTP_INTERVAL, "ws": WS_INTERVAL},
        "goals": {"hub restart, reload, upgrade": "0 failed requests, 0 dropped websockets",
                  "proxy restart": f"refused connections <= {GOAL_PROXY_REFUSED} s (websocket drop expected)"},
        "rows": rows,
        "duration_s": round(time.monotonic() - t_start, 1),
    }
    print(f"## availability ({result['mode']}, probes every {HTTP_INTERVAL * 1000:.0f} ms http, "
          f"{WS_INTERVAL * 1000:.0f} ms websocket)\n")
    print(table(rows))
    print(f"\n{result['duration_s']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
