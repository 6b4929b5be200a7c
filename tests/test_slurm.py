"""barehub with the Slurm flavor on a real two-host Slurm cluster (network namespaces).

tests/slurm_cluster.py builds the hosts: head (munged, slurmctld) and compute
(munged, slurmd), joined by a veth pair. Here, as an admin would:
1. install a base (tests/conftest.py install_base), add the Slurm flavor's
   packages to its environment offline (flavors/slurm.pypi.lock), set [hub]
   address to the head node's cluster address in barehub.toml;
2. enable flavors/slurm/40-slurm.py.example by copying it to config.d and
   uncommenting its settings, adapt it in a later file (partition, limits);
3. start traefik and the hub on the head node from the rendered units' ExecStart.
The cases share the cluster and the hub; each starts the server it needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import helpers
import slurm_cluster
from conftest import install_base, require_root
from helpers import REPO, Proc, enable_example, http, report, unit_command, wait_for
from slurm_cluster import COMPUTE, HEAD, HEAD_IP, PARTITION, Cluster

pytestmark = pytest.mark.e2e

USER, DIES = "bhslurm-ada", "bhslurm-dies"  # DIES: a user whose jobs die before the server starts
# The hub runs as this user ([hub] user, docs/slurm.md section 7), submitting through sudo with the
# example's sudoers rule for the members of USERS_GROUP; BAREHUB_SLURM_HUB_USER=root tests a root hub.
HUB_USER = os.environ.get("BAREHUB_SLURM_HUB_USER", "jupyterhub")
USERS_GROUP = "bhslurm-users"
EXAMPLE = REPO / "flavors" / "slurm" / "40-slurm.py.example"
FAIL_FAST = REPO / "flavors" / "slurm" / "41-slurm-fail-fast.py.example"
START_TIMEOUT = 60


class Hub:
    """The hub and traefik on the head node, driven through traefik with a service token."""

    def __init__(self, base: Path, url: str, token: str, cluster: Cluster, logs: Path):
        self.base, self.url, self.token, self.cluster, self.logs = base, url, token, cluster, logs
        self.procs: dict[str, Proc] = {}
        self.runs: dict[str, int] = {}

    def start(self, unit: str) -> Proc:
        argv, env_add, cwd, user = unit_command(self.base / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        if unit == "jupyterhub.service" and user not in (None, "root"):
            # as the unit's User= (the proxy keeps running as root here: its ports are not the point)
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
        self.runs[unit] = self.runs.get(unit, 0) + 1
        p = Proc(slurm_cluster.on(HEAD, argv), env=env, cwd=cwd, log=self.logs / f"{unit}.{self.runs[unit]}.log",
                 name=unit)
        self.procs[unit] = p
        return p

    @property
    def hub(self) -> Proc:
        return self.procs["jupyterhub.service"]

    def start_hub(self):
        self.start("jupyterhub.service")
        try:
            wait_for(lambda: self.get("/hub/api/")[0] == 200, 60, what="hub through traefik")
        except TimeoutError:
            pytest.fail("hub not reachable through traefik:\n" + self.hub.tail(60))

    def restart_hub(self) -> tuple[float, float]:
        """Stop and start the hub: (seconds to stop, seconds until it answers through traefik)."""
        t0 = time.monotonic()
        assert self.hub.stop(30) is not None
        t1 = time.monotonic()
        self.start_hub()
        return t1 - t0, time.monotonic() - t1

    def get(self, path, token=None, method="GET", data=None, timeout=10):
        """An HTTP request to traefik, made from the head node."""
        return self.cluster.on_head(http, self.url + path, token or self.token, method, data, timeout).result()

    def api(self, path, method="GET", data=None, timeout=10):
        status, body = self.get("/hub/api" + path, method=method, data=data, timeout=timeout)
        return status, (json.loads(body) if body.strip().startswith((b"{", b"[")) else body)

    def server(self, user) -> dict | None:
        return self.api(f"/users/{user}")[1]["servers"].get("")

    def routes(self) -> dict:
        return self.api("/proxy")[1]

    def spawn(self, user) -> float:
        """Start user's server; seconds until the hub calls it ready."""
        t0 = time.monotonic()
        status, body = self.api(f"/users/{user}/server", method="POST", timeout=60)
        assert status in (201, 202), body
        try:
            wait_for(lambda: (self.server(user) or {}).get("ready"), START_TIMEOUT + 10, interval=0.25,
                     what=f"{user}'s server ready")
        except TimeoutError:
            pytest.fail(f"{user}'s server never ready:\n" + self.hub.tail(60))
        return time.monotonic() - t0

    def ensure_running(self, user) -> dict:
        if not (self.server(user) or {}).get("ready"):
            self.spawn(user)
        return self.server(user)

    def user_token(self, user) -> str:
        status, body = self.api(f"/users/{user}/tokens", method="POST",
                                data=json.dumps({"note": "slurm test", "expires_in": 3600}).encode())
        assert status == 201, body
        return body["token"]


def install_flavor(prefix: Path, wheelhouse: Path):
    """What the Slurm flavor adds to the hub's environment, offline from the wheelhouse.

    The lock pins everything the flavor adds, so no resolving (--no-deps); `pip check`
    then proves nothing is missing.
    """
    pip = [str(prefix / "bin/pip"), "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-index", "--find-links", str(wheelhouse),
                    "-r", str(REPO / "flavors/slurm.pypi.lock")], check=True)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def set_hub_address(base: Path, address: str):
    """[hub] address = the head node's cluster address, as the example says to do."""
    toml = base / "barehub.toml"
    text, n = re.subn(r"^\[hub\]\n", f'[hub]\naddress = "{address}"\n', toml.read_text(), count=1, flags=re.M)
    assert n == 1, text
    toml.write_text(text)


@contextlib.contextmanager
def non_root_hub(base: Path, user: str):
    """[hub] user = user, then `barehub install` (it creates the user, who gets state/), and the
    example's sudoers rule for the Jupyter users' group, as docs/slurm.md section 7 says."""
    import pwd

    try:
        pwd.getpwnam(user)
        existed = True
    except KeyError:
        existed = False
    toml = base / "barehub.toml"
    text, n = re.subn(r"^\[hub\]\n", f'[hub]\nuser = "{user}"\n', toml.read_text(), count=1, flags=re.M)
    assert n == 1, text
    toml.write_text(text)
    subprocess.run(["groupadd", "-f", USERS_GROUP], check=True)
    try:
        r = subprocess.run([str(base / "hub" / "bin" / "barehub"), "install", "--base", str(base), "--no-start"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert pwd.getpwnam(user) and (base / "state").stat().st_uid == pwd.getpwnam(user).pw_uid
        for member in (USER, DIES):
            subprocess.run(["usermod", "-aG", USERS_GROUP, member], check=True)
        with helpers.slurm_sudoers(user, USERS_GROUP):
            yield
    finally:
        subprocess.run(["groupdel", USERS_GROUP], capture_output=True)
        if not existed:
            subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
            subprocess.run(["userdel", user], capture_output=True)


@pytest.fixture(scope="module")
def hub(scratch, wheelhouse):
    require_root()
    missing = slurm_cluster.missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages slurm-wlm, munge, sudo: `make apt-deps`)")
    t0 = time.monotonic()
    with helpers.local_user(USER), helpers.local_user(DIES), contextlib.ExitStack() as stack:
        base = scratch / "slurm-base"
        prefix, url, _ = install_base(base, wheelhouse)
        t1 = time.monotonic()
        install_flavor(prefix, wheelhouse)
        report(f"slurm: base installed in {t1 - t0:.1f}s, flavor added in {time.monotonic() - t1:.1f}s")
        set_hub_address(base, HEAD_IP)
        if HUB_USER != "root":
            stack.enter_context(non_root_hub(base, HUB_USER))

        confd = base / "jupyterhub_config.d"
        token = secrets.token_hex(16)
        (confd / "20-driver.py").write_text(
            f'c.Authenticator.allowed_users = {{"{USER}", "{DIES}"}}\n'
            f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{token}"}}]\n'
            'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
            '    "scopes": ["admin:users", "admin:servers", "tokens", "proxy"]}]\n'
        )
        enabled = confd / "40-slurm.py"  # the admin copies the example, then uncomments it
        shutil.copy(EXAMPLE, enabled)
        enabled.write_text(enable_example(enabled.read_text()))
        shutil.copy(FAIL_FAST, confd / "41-slurm-fail-fast.py")  # enabled as shipped
        # the site's adaptations, in a later file; short intervals for the test
        (confd / "45-site.py").write_text(
            f'c.SlurmSpawner.req_partition = "{PARTITION}"\n'
            'c.SlurmSpawner.req_runtime = "00:20:00"\n'
            'c.SlurmSpawner.req_memory = ""\n'
            f'c.SlurmSpawner.start_timeout = {START_TIMEOUT}\n'
            'c.SlurmSpawner.http_timeout = 30\n'
            'c.SlurmSpawner.poll_interval = 2\n'
            # DIES's jobs run for 3 s, then fail, like a broken environment would
            f'c.SlurmSpawner.req_prologue = \'if [ "$(id -un)" = "{DIES}" ]; then sleep 3; '
            'echo "test: this job dies before its server starts" >&2; exit 3; fi\'\n'
        )

        cluster = Cluster(scratch / "slurm-cluster")
        logs = scratch / "slurm-logs"
        logs.mkdir(exist_ok=True)
        h = Hub(base, url, token, cluster, logs)
        try:
            tc = time.monotonic()
            cluster.start()
            report(f"slurm: two-host cluster (munge, slurmctld, slurmd) up in {time.monotonic() - tc:.1f}s")
            h.start("jupyterhub-proxy.service")
            h.start_hub()
            yield h
        finally:
            t2 = time.monotonic()
            for p in reversed(list(h.procs.values())):
                p.stop(30)
            t3 = time.monotonic()
            cluster.close()
            print(f"slurm teardown: hub + traefik stopped in {t3 - t2:.1f}s, cluster in {time.monotonic() - t3:.1f}s")
            if os.environ.get("BAREHUB_SLURM_KEEP_LOGS"):  # debugging aid: where to copy the logs
                shutil.copytree(logs, os.environ["BAREHUB_SLURM_KEEP_LOGS"], dirs_exist_ok=True)
                shutil.copytree(cluster.dir, os.environ["BAREHUB_SLURM_KEEP_LOGS"] + "/cluster",
                                dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock", "munge.key"))


def singleuser_pids(user: str) -> list[int]:
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid == uid and b"singleuser" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def netns_inode(pid: int) -> int:
    return int(re.search(r"\[(\d+)\]", os.readlink(f"/proc/{pid}/ns/net"))[1])


def test_spawn_runs_as_a_slurm_job_on_the_compute_node(hub):
    if hub.server(USER):
        hub.api(f"/users/{USER}/server", method="DELETE", timeout=60)
        wait_for(lambda: hub.server(USER) is None, 30, what="old server stopped")
    took = hub.spawn(USER)
    report(f"slurm: spawn through sbatch until ready: {took:.1f}s (start_timeout {START_TIMEOUT}s), "
           f"hub running as {HUB_USER}")
    import pwd

    assert pwd.getpwuid(os.stat(f"/proc/{hub.hub.pid}").st_uid).pw_name == HUB_USER
    server = hub.server(USER)
    job = server["state"]["job_id"]
    # Slurm ran it on the compute host
    jobs = hub.cluster.squeue("%i", "%u", "%T", "%B", "%P")
    assert [job, USER, "RUNNING", COMPUTE, PARTITION] in jobs, jobs
    # the proxy sends the user's URL to the compute host, by the name squeue gives
    target = hub.routes()[f"/user/{USER}/"]["target"]
    assert re.fullmatch(rf"http://{COMPUTE}:\d+", target), target
    # the server's processes live in the compute host's network namespace
    pids = singleuser_pids(USER)
    assert pids, "no jupyterhub-singleuser process of the user"
    assert {netns_inode(p) for p in pids} == {hub.cluster.netns_inode(COMPUTE)}
    assert hub.cluster.netns_inode(COMPUTE) != hub.cluster.netns_inode(HEAD)

    # /user/<name>/api/status through traefik, with the user's own token
    status, body = hub.get(f"/user/{USER}/api/status", token=hub.user_token(USER))
    assert status == 200, body
    assert "kernels" in json.loads(body)
    # and a wrong token does not get in
    assert hub.get(f"/user/{USER}/api/status", token="not-a-token")[0] != 200


def test_hub_restart_keeps_the_job_and_fails_no_request(hub):
    server = hub.ensure_running(USER)
    job = server["state"]["job_id"]
    token = hub.user_token(USER)
    path = f"/user/{USER}/api/status"
    results: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def probe():  # runs on the head node (a thread in its netns)
        while not stop.is_set():
            try:
                code = http(hub.url + path, token, timeout=2)[0]
            except Exception as e:  # noqa: BLE001 - a refused or reset connection is a failure
                code = type(e).__name__
            results.append((time.monotonic(), code))
            stop.wait(0.25)

    done = hub.cluster.on_head(probe)
    time.sleep(1)
    t0 = time.monotonic()
    old_pid = hub.hub.pid
    stopping, starting = hub.restart_hub()
    back = time.monotonic() - t0
    time.sleep(1.5)
    stop.set()
    done.result(10)

    failures = [(round(ts - t0, 2), code) for ts, code in results if code != 200]
    report(f"slurm: hub restart with a running job: hub back after {back:.1f}s "
           f"(stop {stopping:.1f}s, start {starting:.1f}s); "
           f"{len(results)} probes through traefik, {len(failures)} failed")
    assert hub.hub.pid != old_pid
    assert len(results) >= 8
    assert failures == []
    after = hub.server(USER)
    assert after and after["ready"] and after["state"]["job_id"] == job
    assert [job, "RUNNING"] in hub.cluster.squeue("%i", "%T")
    assert re.search(rf"{USER}.*still running", hub.hub.log.read_text()), hub.hub.tail()


def test_job_cancelled_outside_the_hub_is_noticed(hub):
    server = hub.ensure_running(USER)
    job = server["state"]["job_id"]
    assert f"/user/{USER}/" in hub.routes()
    t0 = time.monotonic()
    hub.cluster.run(HEAD, "scancel", job)
    try:
        wait_for(lambda: hub.server(USER) is None and f"/user/{USER}/" not in hub.routes(), 30, interval=0.25,
                 what="the hub to notice the cancelled job")
    except TimeoutError:
        pytest.fail("scancel not noticed:\n" + hub.hub.tail(40))
    report(f"slurm: external scancel noticed, route removed after {time.monotonic() - t0:.1f}s "
           "(poll_interval 2s)")
    assert hub.get(f"/user/{USER}/api/status", token=hub.user_token(USER))[0] != 200
    assert not [j for j in hub.cluster.squeue("%i") if j == [job]]


def spawn_failure_message(hub, user) -> str:
    """The failure the hub reports for user's last spawn (its progress event stream)."""
    status, body = hub.get(f"/hub/api/users/{user}/server/progress", timeout=10)
    assert status == 200, body
    events = [json.loads(line[5:]) for line in body.decode().splitlines() if line.startswith("data:")]
    failed = [e for e in events if e.get("failed")]
    assert failed, events
    return failed[-1]["message"]


def test_job_that_dies_before_its_server_starts_fails_the_spawn_fast(hub):
    t0 = time.monotonic()
    status, body = hub.api(f"/users/{DIES}/server", method="POST", timeout=START_TIMEOUT + 10)

    def finished():
        info = hub.api(f"/users/{DIES}")[1]
        return "" not in info["servers"] and not info.get("pending")

    try:
        wait_for(finished, START_TIMEOUT + 10, interval=0.25, what="the spawn to end")
    except TimeoutError:
        pytest.fail("the spawn of a dead job did not end:\n" + hub.hub.tail(40))
    took = time.monotonic() - t0
    report(f"slurm: job dead before its server started: spawn failed after {took:.1f}s "
           f"(start_timeout {START_TIMEOUT}s), HTTP {status}")
    expected = rf"Slurm job \d+ ended before the server in it started\. Its output is /home/{DIES}/jupyterhub_slurmspawner_\d+\.log on the compute node"
    # the same message in the answer to the spawn request (when it was still waiting) and in its progress
    if status >= 400:
        assert re.search(expected, body["message"]), body
    else:
        assert status == 202, body
    assert re.search(expected, spawn_failure_message(hub, DIES))
    assert took < START_TIMEOUT / 3, took
    assert not [j for j in hub.cluster.squeue("%u") if j == [DIES]]


def test_enabled_culler_cancels_the_idle_job(hub):
    confd = hub.base / "jupyterhub_config.d"
    shutil.copy(confd / "50-idle-culler.py.example", confd / "50-idle-culler.py")
    (confd / "60-short-cull.py").write_text(
        'culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")\n'
        'culler["command"][3:] = ["--timeout=10", "--cull-every=3"]\n'
    )
    try:
        hub.restart_hub()
        server = hub.ensure_running(USER)
        job = server["state"]["job_id"]
        ready = time.monotonic()
        try:
            wait_for(lambda: hub.server(USER) is None, 60, interval=0.5, what="the culler to stop the server")
            wait_for(lambda: [job] not in hub.cluster.squeue("%i"), 20, what="the job to leave squeue")
        except TimeoutError as e:
            pytest.fail(f"{e}:\n" + hub.hub.tail(40))
        report(f"slurm: idle culler (--timeout=10 --cull-every=3): job {job} gone "
               f"{time.monotonic() - ready:.1f}s after ready")
        assert "Culling server" in hub.hub.log.read_text()
    finally:
        for name in ("50-idle-culler.py", "60-short-cull.py"):
            (confd / name).unlink(missing_ok=True)
