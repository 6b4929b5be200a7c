#!/usr/bin/env python3
"""Hub restart time with many users and running servers (issue 7, item 5).

The hub runs as barehub runs it: a base written by `barehub install --no-start`
(barehub.toml, the hidden hub config with BarehubProxy, traefik's static config),
traefik and the hub started with the exact ExecStart lines of the rendered units.
It runs on the host, not in a container: the cost measured is the hub's own
start-up (Python, database, spawners, routes), which systemd does not change,
and 1,000 servers through a container's namespace would only add noise. The
environment is the one running this script (the test venv: the pinned
jupyterhub, jupyterhub-traefik-proxy and traefik), barehub from src/.

Users' servers are played by benchmarks/fake_singleuser.py (one process, one
port, answering /user/<name>/ only while <name> runs there) and started by its
FakeSpawner, whose poll asks the fake.

Steps: N users with a running server each, either through the REST API (one
bulk request, then one spawn per user: --populate api, the default with --smoke)
or, much faster at N = 1,000, written into the hub's database through
JupyterHub's ORM while the hub is stopped, after which the hub's next start adds
the routes itself (--populate db, the default otherwise); every server is
requested once through traefik; then the hub is stopped (SIGTERM, as systemd
does) and started again while probes request the servers round-robin through
traefik. Measured: time from the stop to the hub API
answering 200 through traefik (goal <= 10 s), failed probe requests (goal 0),
and how many servers the new hub still lists as running (must be N). Before
the users are created, the same restart of the empty hub gives the baseline:
the ratio of the two (goal <= 1.5) is what the servers cost a restart.

    python benchmarks/hub_scale.py [--smoke] [--users N] [--json PATH] [--profile]

--profile runs one more restart under cProfile and prints where start-up goes.
Exit status: 0 when the run completed (goals missed or not), 1 on a harness error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (REPO / "tests", REPO / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from helpers import http  # noqa: E402 (tests/ is on sys.path from here on)

GOAL_API_S = 10.0
GOAL_RATIO = 1.5  # restart to API with N servers / the same with an empty hub, in the same run (issue 14)
PROBE_THREADS = 2
PROBE_INTERVAL = 0.05  # per thread: ~40 requests/s in all, round-robin over all servers




class Setup:
    def __init__(self, work: Path, log):
        from helpers import free_ports

        self.work, self.log = work, log
        self.base = work / "base"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.http_port, self.api_port, self.hub_port, self.fake_port = free_ports(4)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.token = secrets.token_hex(16)
        self.procs: dict[str, object] = {}
        self.runs = 0

    def install(self) -> None:
        prefix = Path(sys.prefix)
        for tool in ("jupyterhub", "traefik"):
            if not (prefix / "bin" / tool).exists():
                raise RuntimeError(f"{prefix}/bin/{tool} is missing: run this with the test venv "
                                   "(.venv-test/bin/python; `make test-deps` makes it)")
        self.base.mkdir()
        (self.base / "barehub.toml").write_text(
            f"[proxy]\nhttp_port = {self.http_port}\napi_port = {self.api_port}\n\n[hub]\nport = {self.hub_port}\n")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        r = subprocess.run([sys.executable, "-m", "barehub", "install", "--base", str(self.base),
                            "--prefix", str(prefix), "--no-start"], env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"barehub install --no-start failed:\n{r.stdout}{r.stderr}")
        (self.base / "jupyterhub_config.d" / "20-bench.py").write_text(
            "# hub_scale benchmark: fake servers, a service token to drive the REST API\n"
            f"import sys\nsys.path.insert(0, {str(BENCH)!r})\n"
            'c.JupyterHub.spawner_class = "fake_singleuser.FakeSpawner"\n'
            f'c.FakeSpawner.fake_url = "http://127.0.0.1:{self.fake_port}"\n'
            f'c.JupyterHub.services = [{{"name": "bench", "api_token": "{self.token}"}}]\n'
            'c.JupyterHub.load_roles = [{"name": "bench", "services": ["bench"],\n'
            '    "scopes": ["admin:users", "admin:servers", "list:users"]}]\n'
            # users are created through the API only (no login, no system accounts)
            'c.JupyterHub.authenticator_class = "null"\n'
            "c.Authenticator.allow_all = True\n"
            # as many spawns at once as the benchmark sends; the default (100) is not the subject
            "c.JupyterHub.concurrent_spawn_limit = 0\n"
        )

    def start(self, what: str, wrapper: list[str] = ()) -> None:
        from helpers import Proc, unit_command

        unit = {"proxy": "jupyterhub-proxy.service", "hub": "jupyterhub.service"}[what]
        argv, env_add, cwd, _user = unit_command(self.base / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add,
               "PYTHONPATH": f"{REPO / 'src'}"}
        if wrapper:
            argv = [*wrapper, *argv]
        self.runs += 1
        self.procs[what] = Proc(argv, env=env, cwd=cwd, log=self.logs / f"{what}.{self.runs}.log", name=what)

    def start_fake(self) -> None:
        from helpers import Proc, wait_for

        self.procs["fake"] = Proc([sys.executable, str(BENCH / "fake_singleuser.py"), "--port", str(self.fake_port)],
                                  log=self.logs / "fake.log", name="fake")
        wait_for(lambda: http(f"http://127.0.0.1:{self.fake_port}/_fake/servers")[0] == 200, 30,
                 what="the fake single-user server")

    def api_up(self) -> bool:
        try:
            return http(f"{self.url}/hub/api/", timeout=2)[0] == 200
        except Exception:  # noqa: BLE001
            return False

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.stop(30, group=True)


# --------------------------------------------------------------------------- steps

def populate(s: Setup, names: list[str], log) -> dict:
    from helpers import wait_for

    t0 = time.monotonic()
    code, body = http(f"{s.url}/hub/api/users", token=s.token, method="POST", data={"usernames": names}, timeout=120)
    if code != 201:
        raise RuntimeError(f"creating {len(names)} users failed: {code} {body[:300]!r}")
    created = time.monotonic() - t0

    def spawn(name):
        code, body = http(f"{s.url}/hub/api/users/{name}/server", token=s.token, method="POST", timeout=300)
        if code not in (201, 202):
            raise RuntimeError(f"starting {name}'s server failed: {code} {body[:300]!r}")

    t1 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for i, f in enumerate(concurrent.futures.as_completed([pool.submit(spawn, n) for n in names]), 1):
            f.result()
            if i % 100 == 0:
                log(f"  {i}/{len(names)} servers started ({time.monotonic() - t1:.0f}s)")
    wait_for(lambda: running_count(s) == len(names), 300, interval=1, what="all servers ready in the hub")
    spawned = time.monotonic() - t1
    return {"create_users_s": round(created, 2), "start_servers_s": round(spawned, 2), "populate": "api"}


def populate_db(s: Setup, names: list[str], log) -> dict:
    """The same end state as `populate`, written while the hub is stopped: much faster at N=1,000.

    Through JupyterHub's own ORM, each user gets what a spawn through the API leaves in the
    database: the user with its default roles, a spawner with a server at the fake's URL and
    a start time, the server's API token and its OAuth client. The fake is told the servers
    run. The hub's next start adds their routes itself (proxy.check_routes, through
    BarehubProxy); only the restart after that is measured.
    """
    from datetime import datetime, timezone

    from helpers import wait_for
    from jupyterhub import orm, roles
    from jupyterhub.utils import hash_token, new_token

    t0 = time.monotonic()
    s.procs.pop("hub").stop(30)
    db = orm.new_session_factory(f"sqlite:///{s.base / 'state' / 'jupyterhub.sqlite'}")()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for name in names:
        user = orm.User(name=name, created=now)
        db.add(user)
        db.flush()
        roles.assign_default_roles(db, user)
        spawner = orm.Spawner(name="", user=user, started=now, last_activity=now, state={})
        spawner.server = orm.Server(proto="http", ip="127.0.0.1", port=s.fake_port, base_url=f"/user/{name}/",
                                    cookie_name="cookie")
        token = new_token()
        user.new_api_token(token=token, note=f"Server at /user/{name}/", generated=True)
        spawner.oauth_client = orm.OAuthClient(
            # one hash round: the secret is never checked here, and 16,384 rounds x 1,000 is slow
            identifier=f"jupyterhub-user-{name}", secret=hash_token(token, rounds=1),
            redirect_uri=f"/user/{name}/oauth_callback", description=f"Server at /user/{name}/",
            allowed_scopes=[f"access:servers!server={name}/"])
        db.add(spawner)
    db.commit()
    db.close()
    for name in names:
        code, _ = http(f"http://127.0.0.1:{s.fake_port}/_fake/servers/{name}", method="POST", data={})
        if code != 201:
            raise RuntimeError(f"the fake refused to start {name}: {code}")
    written = time.monotonic() - t0
    t1 = time.monotonic()
    s.start("hub")
    wait_for(s.api_up, 120, what="hub API (first start, adding routes)")
    wait_for(lambda: running_count(s) == len(names), 300, interval=1, what="all servers ready in the hub")
    wait_for(lambda: not reach_all(s, names), 300, interval=1, what="every route servable through traefik")
    return {"create_users_s": round(written, 2), "start_servers_s": round(time.monotonic() - t1, 2),
            "populate": "db"}


def running_count(s: Setup) -> int:
    n, offset = 0, 0
    while True:
        code, body = http(f"{s.url}/hub/api/users?state=ready&offset={offset}&limit=200", token=s.token, timeout=30)
        if code != 200:
            raise RuntimeError(f"listing users failed: {code} {body[:300]!r}")
        users = json.loads(body)
        n += sum(1 for u in users if u.get("servers", {}).get("", {}).get("ready"))
        if len(users) < 200:
            return n
        offset += 200


def reach_all(s: Setup, names: list[str]) -> list[tuple[str, int | str]]:
    def one(name):
        try:
            return name, http(f"{s.url}/user/{name}/api/status", timeout=10)[0]
        except Exception as e:  # noqa: BLE001
            return name, type(e).__name__

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [r for r in pool.map(one, names) if r[1] != 200]


class Probes:
    """Round-robin GETs of users' servers through traefik, from a few threads."""

    def __init__(self, s: Setup, names: list[str]):
        self.s, self.names = s, names
        self.stop = threading.Event()
        self.records: list[tuple[float, str, int | str]] = []
        self.lock = threading.Lock()
        self.next = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(PROBE_THREADS if names else 0)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            with self.lock:
                name = self.names[self.next % len(self.names)]
                self.next += 1
            t = time.monotonic()
            try:
                code = http(f"{self.s.url}/user/{name}/api/status", timeout=5)[0]
            except Exception as e:  # noqa: BLE001 - refused, reset, timeout: failures
                code = type(e).__name__
            self.records.append((t, name, code))
            self.stop.wait(PROBE_INTERVAL)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        return self.records


def hub_log_times(log_text: str) -> dict:
    out = {}
    m = re.search(r"Initialized (\d+) spawners in ([\d.]+) seconds", log_text)
    if m:
        out["init_spawners_s"] = float(m.group(2))
        out["init_spawners_n"] = int(m.group(1))
    if "init_spawners did not complete" in log_text:
        out["init_spawners_backgrounded"] = True
    out["routes_added_at_start"] = log_text.count("Adding missing route")
    return out


def restart(s: Setup, names: list[str], log, wrapper: list[str] = ()) -> dict:
    """SIGTERM the hub, start it again; time to API; probes throughout."""
    from helpers import wait_for

    probes = Probes(s, names)
    time.sleep(1)
    old_log = s.procs["hub"].log
    t0 = time.monotonic()
    wall0 = time.time()
    s.procs["hub"].stop(30)
    stopped = time.monotonic() - t0
    wall_exit = time.time()
    s.start("hub", wrapper)
    t_start = time.monotonic()
    wait_for(s.api_up, 120, interval=0.05, what="hub API after restart")
    api = time.monotonic()
    hub_log = s.procs["hub"].log

    def spawners_done():
        text = hub_log.read_text(errors="replace")
        return "Initialized" in text and "spawners in" in text

    wait_for(spawners_done, 300, interval=0.2, what="the new hub to finish checking its spawners")
    time.sleep(2)
    records = probes.finish()
    failed = [(round(t - t0, 2), n, c) for t, n, c in records if c != 200]
    row = {
        "stop_s": round(stopped, 2),
        "restart_to_api_s": round(api - t0, 2),
        "start_to_api_s": round(api - t_start, 2),
        "probe_requests": len(records),
        "probe_failed": len(failed),
        "probe_failures_sample": failed[:10],
        "servers_probed": len({n for _, n, _ in records}),
        **hub_log_times(hub_log.read_text(errors="replace")),
    }
    row.update(stop_phases(old_log.read_text(errors="replace"), wall0, wall_exit))
    row["servers_running_after"] = running_count(s)
    return row


def stop_phases(log_text: str, wall_sent: float, wall_exit: float) -> dict:
    """Where the stop went: SIGTERM sent -> logged by the hub -> its cleanup done -> process gone."""
    from datetime import datetime

    def when(pattern):
        m = re.search(r"\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] " + pattern, log_text)
        return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() if m else None

    got, done = when("Received signal SIGTERM"), when(r"\.\.\.done")
    out = {}
    if got and done:
        out["stop_signal_to_handler_s"] = round(got - wall_sent, 2)
        out["stop_cleanup_s"] = round(done - got, 2)
        out["stop_exit_after_cleanup_s"] = round(wall_exit - done, 2)
    return out


def profile_restart(s: Setup, names: list[str], log, out: Path) -> list[str]:
    """One more restart under cProfile (dumped once the API answers): the top of the profile."""
    import pstats

    stats_file = out.with_suffix(".prof")
    wrapper = [sys.executable, str(Path(__file__).resolve()), "profile-hub", str(stats_file), "--"]
    row = restart(s, names, log, wrapper)
    os.kill(s.procs["hub"].pid, signal.SIGUSR2)
    from helpers import wait_for

    wait_for(stats_file.exists, 30, what="the profile")
    time.sleep(0.5)
    import io

    buf = io.StringIO()
    st = pstats.Stats(str(stats_file), stream=buf)
    st.sort_stats("cumulative").print_stats(40)
    log(f"profiled restart (slower under cProfile): {json.dumps(row)}")
    return buf.getvalue().splitlines()


def profile_hub_main(argv) -> None:
    """`hub_scale.py profile-hub OUT -- ARGV`: exec ARGV's jupyterhub under cProfile until SIGUSR2."""
    import cProfile

    out, argv = argv[0], argv[argv.index("--") + 1:]
    prof = cProfile.Profile()

    def dump(*_):
        prof.disable()
        prof.dump_stats(out + ".tmp")
        os.rename(out + ".tmp", out)

    signal.signal(signal.SIGUSR2, dump)
    sys.argv = ["jupyterhub", *argv[1:]]
    prof.enable()
    from jupyterhub.app import main as hub_main

    hub_main()


# --------------------------------------------------------------------------- main

def table(rows: list[dict]) -> str:
    lines = ["| users / running servers | populate (s) | stop (s) | restart to API (s) | start to API (s) "
             "| init_spawners (s) | probes | failed | running after | goal | empty hub: restart to API (s) "
             f"| ratio (goal <= {GOAL_RATIO}) |", "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['users']} / {r['servers']} | {r['create_users_s'] + r['start_servers_s']:.1f} | {r['stop_s']:.2f} "
            f"| {r['restart_to_api_s']:.2f} | {r['start_to_api_s']:.2f} | {r.get('init_spawners_s', float('nan')):.2f} "
            f"| {r['probe_requests']} | {r['probe_failed']} | {r['servers_running_after']} "
            f"| {'met' if r['goal_met'] else 'MISSED'} | {r.get('empty_restart_to_api_s', float('nan')):.2f} "
            f"| {r.get('restart_ratio', float('nan')):.2f} ({'met' if r.get('ratio_goal_met') else 'MISSED'}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["profile-hub"]:
        profile_hub_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="20 users instead of 1,000")
    ap.add_argument("--users", type=int, help="number of users with a running server (default 1000)")
    ap.add_argument("--populate", choices=["api", "db"],
                    help="start the servers through the REST API (default with --smoke), or write them "
                         "into the hub's database while it is stopped (default otherwise: faster)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true", help="one more restart under cProfile")
    ap.add_argument("--extra-config", type=Path, action="append", default=[],
                    help="also copy this file into jupyterhub_config.d/ (to try a setting)")
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args(argv)
    n = args.users or (20 if args.smoke else 1000)

    def log(msg):
        print(f"hub_scale: {msg}", file=sys.stderr, flush=True)

    if os.geteuid() != 0:
        log("needs root: the hub runs as root, as barehub installs it (and `barehub install` creates the proxy user)")
        return 1
    t_all = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="barehub-bench-scale-", dir="/var/tmp"))
    work.chmod(0o755)
    s = Setup(work, log)
    names = [f"u{i:05d}" for i in range(n)]
    profile: list[str] = []
    try:
        from helpers import wait_for

        s.install()
        for extra in args.extra_config:
            shutil.copy(extra, s.base / "jupyterhub_config.d" / f"90-{extra.name}")
        s.start_fake()
        s.start("proxy")
        s.start("hub")
        wait_for(s.api_up, 60, what="hub API through traefik")
        log("hub up; restarting it empty (the baseline of the ratio)")
        empty = restart(s, [], log)
        log(f"empty hub: restart to API {empty['restart_to_api_s']} s; creating {n} users and starting their servers")
        how = args.populate or ("api" if args.smoke else "db")
        row = {"users": n, "servers": n, **(populate if how == "api" else populate_db)(s, names, log)}
        log(f"populated in {row['create_users_s'] + row['start_servers_s']:.0f}s")
        bad = reach_all(s, names)
        if bad:
            raise RuntimeError(f"{len(bad)} servers not reachable through traefik before the restart: {bad[:5]}")
        log("every server answers through traefik; restarting the hub")
        row.update(restart(s, names, log))
        row["empty_restart_to_api_s"] = empty["restart_to_api_s"]
        row["empty_start_to_api_s"] = empty["start_to_api_s"]
        row["restart_ratio"] = round(row["restart_to_api_s"] / empty["restart_to_api_s"], 2)
        row["ratio_goal_met"] = row["restart_ratio"] <= GOAL_RATIO and row["probe_failed"] == 0
        row["goal_met"] = (row["restart_to_api_s"] <= GOAL_API_S and row["probe_failed"] == 0
                           and row["servers_running_after"] == n)
        log(f"restart: {json.dumps(row)}")
        if args.profile:
            profile = profile_restart(s, names, log, work / "hub")
    except Exception as e:  # noqa: BLE001 - a harness error: say what, exit 1
        import traceback

        traceback.print_exc()
        for name, p in s.procs.items():
            log(f"--- {name} log tail ---\n{p.tail(30)}")
        log(f"harness error: {e}")
        return 1
    finally:
        s.stop_all()
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "hub_scale",
        "mode": "smoke" if args.smoke else "full",
        "goal": f"hub API ready <= {GOAL_API_S} s after a restart, 0 failed probe requests, all servers kept",
        "rows": [row],
        "duration_s": round(time.monotonic() - t_all, 1),
    }
    if profile:
        result["profile_top"] = profile
    print(f"## hub scale ({result['mode']}: {n} users, {n} running fake servers, traefik file provider)\n")
    print(table([row]))
    if profile:
        print("\n<details><summary>profile of a restart (cProfile, cumulative)</summary>\n\n```")
        print("\n".join(profile))
        print("```\n</details>")
    print(f"\n{result['duration_s']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
