"""The systemdspawner flavor on a real systemd: one machine, PAM users, one unit per server.

A container with no network gets the flavor's test installer (built here with
scripts/build_test_installer.py --flavor systemdspawner), installed with `-b`
only. Then, as an admin would: the shipped example is copied into
jupyterhub_config.d/ with its settings uncommented (docs/systemdspawner.md), a
local user gets a password, logs in through /hub/login with it (the default
PAMAuthenticator) and starts a server. Checked, in order: the server is a
systemd unit of its own running as the user, with the example's limits; it
survives `systemctl restart jupyterhub` with no failed request; the shipped
idle culler, enabled with a short timeout in a later file, stops the unit.
Requests come from host programs in the container's network namespace.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, report, version, wait_for
from probes import read_results
from system import installers
from system.test_systemd import TOKEN, Hub as SystemdHub  # TOKEN: the driver service's, which Hub sends

FLAVOR = "systemdspawner"
BASE = "/opt/barehub"
URL = "http://127.0.0.1"  # traefik on port 80, inside the container's network namespace
USER, PASSWORD = "ada", "ada-" + secrets.token_hex(8)
OUTSIDER = "bob"  # a local user with a password, not in the allowed group
GROUP = "jupyterhub-users"  # the example's c.PAMAuthenticator.allowed_groups
UNIT = f"jupyter-{USER}-singleuser.service"  # systemdspawner's unit_name_template
DRIVER_CONFIG = (
    f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{TOKEN}"}}]\n'
    'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
    '    "scopes": ["admin:users", "admin:servers", "tokens", "list:users"]}]\n'
)
# the flavor's test installer, or in release CI the real one (BAREHUB_INSTALLER, tests/system/conftest.py)
INSTALLER = installers.container_path(installers.given()) if installers.given() else \
    f"/root/barehub-{FLAVOR}-{version()}-Linux-x86_64.sh"
EXAMPLE = f"{BASE}/hub/share/barehub/examples/40-{FLAVOR}.py.example"
PROBES = REPO / "tests" / "probes.py"
# What an admin runs to enable the example: uncomment lines where "#" is directly
# followed by code (the example's own instructions), nothing else.
UNCOMMENT = r"sed -e 's/^#\([^[:space:]#]\)/\1/'"


def installer_inputs() -> str:
    """A digest of everything the flavored installer is built from: barehub's sources (what its
    wheel holds), the locks, which pin every other wheel, the flavor, the builder and the hook."""
    files = [REPO / "pyproject.toml", REPO / "README.md", REPO / "construct/pypi.lock",
             REPO / "scripts/build_test_installer.py", REPO / "scripts/flavor.py",
             REPO / "post_install/post_install.sh", *(REPO / "flavors").glob(f"{FLAVOR}.*"),
             *(REPO / "flavors" / FLAVOR).rglob("*"),
             *(REPO / "src" / "barehub").rglob("*"), *(REPO / "templates").rglob("*")]
    h = hashlib.sha256()
    for path in sorted(f for f in files if f.is_file() and "__pycache__" not in f.parts):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def installer_file() -> Path:
    """The flavor's test installer; `make wheels` and the build run only when an input changed."""
    given = installers.given()
    if given is not None:
        if installers.flavor_of(given) != FLAVOR:
            raise pytest.UsageError(f"{installers.INSTALLER_ENV}={given}: these tests need the {FLAVOR} flavor's installer")
        return given
    out = REPO / "build" / "test-installer" / Path(INSTALLER).name
    stamp = out.with_name(out.name + ".inputs")
    digest = installer_inputs()
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        report(f"systemdspawner: flavored test installer up to date ({out.name})")
        return out
    stamp.unlink(missing_ok=True)
    t0 = time.monotonic()
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "wheels"], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_test_installer.py"), "--version", version(),
                    "--wheels", str(REPO / "build" / "wheels"), "--requirements", str(REPO / "construct/pypi.lock"),
                    "--flavor", FLAVOR, "--python", "/usr/bin/python3", "--out", str(out)], check=True)
    stamp.write_text(digest + "\n")
    report(f"systemdspawner: make wheels + flavored test installer: {time.monotonic() - t0:.0f}s")
    return out


@pytest.fixture(scope="module")
def ct(container_factory, installer_file):
    c = container_factory("bh-sds", private_network=True)
    c.push(installer_file, "/root")
    yield c
    t0 = time.monotonic()
    c.destroy()
    report(f"systemdspawner: container stop {c.timings.get('stop', 0):.1f}s, "
           f"stop + delete {time.monotonic() - t0:.1f}s")


class Hub(SystemdHub):
    """test_systemd's client (curl from the container's network namespace), plus PAM logins."""

    def __init__(self, ct, tmp: Path):
        super().__init__(ct)
        self.tmp = tmp

    def login(self, user: str, password: str) -> tuple[int, Path]:
        """POST /hub/login like the browser form does; returns the status and the cookie jar."""
        jar = self.tmp / f"{user}.cookies"
        jar.unlink(missing_ok=True)
        self.curl("/hub/login", "-c", str(jar), token=None)
        xsrf = re.search(r"\t_xsrf\t(\S+)", jar.read_text())
        assert xsrf, f"no _xsrf cookie from /hub/login: {jar.read_text()}"
        code, _ = self.curl("/hub/login", "-b", str(jar), "-c", str(jar), "--data-urlencode", f"username={user}",
                            "--data-urlencode", f"password={password}", "--data-urlencode", f"_xsrf={xsrf[1]}",
                            token=None)
        return code, jar

    def sh(self, cmd: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.ct.exec(cmd, **kw)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props), check=False).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def server(self) -> dict:
        code, info = self.api(f"/users/{USER}")
        assert code == 200, info
        return info["servers"].get("", {})

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        """wait_for, with the hub's journal in the error when it times out."""
        try:
            wait_for(predicate, timeout, what=what)
        except TimeoutError as e:
            journal = self.sh("journalctl -u jupyterhub -u jupyterhub-proxy --no-pager -o cat | tail -n 40",
                              check=False).stdout
            raise TimeoutError(f"{e}\n--- journal ---\n{journal}") from None

    def reload_hub(self) -> None:
        """`systemctl reload jupyterhub` (checks config.d, then restarts the hub) and wait for it."""
        pid = self.main_pid("jupyterhub.service")
        self.sh(f"{BASE}/hub/bin/barehub check && systemctl reload jupyterhub")
        self.wait_for(lambda: self.main_pid("jupyterhub.service") not in (0, pid) and self.up(), 60,
                      what="hub restarted by reload")


@pytest.fixture(scope="module")
def hub(ct, tmp_path_factory):
    return Hub(ct, tmp_path_factory.mktemp("sds"))


# ------------------------------------------------------------------ the tests, in order


def test_install_flavor_offline(ct, hub):
    t0 = time.monotonic()
    r = ct.exec(["bash", INSTALLER, "-b"], check=False, timeout=600)
    report(f"systemdspawner: installer -b: {time.monotonic() - t0:.0f}s, exit {r.returncode}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service"):
        assert hub.systemctl("is-active", unit).stdout.strip() == "active"
    hub.wait_for(hub.up, 60, what="hub through the proxy")
    # the example is in the environment, where the real flavor puts it, and not active
    assert ct.exec(["test", "-f", EXAMPLE], check=False).returncode == 0
    assert ct.exec(["sh", "-c", f"ls {BASE}/jupyterhub_config.d/*.py 2>/dev/null"], check=False).stdout == ""
    recorded = json.loads(ct.read_file(f"{BASE}/hub/share/barehub/flavor.json"))
    assert recorded["flavor"] == FLAVOR and recorded["installer"] == f"barehub-{FLAVOR}"
    ct.exec([f"{BASE}/hub/bin/python", "-c", "import systemdspawner, jupyter_server, jupyterlab"])


def test_enable_example_and_log_in_with_pam_password(ct, hub):
    ct.exec(["groupadd", GROUP])
    ct.exec(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", GROUP, USER])
    ct.exec(["useradd", "--create-home", "--shell", "/bin/bash", OUTSIDER])
    ct.exec(["chpasswd"], input=f"{USER}:{PASSWORD}\n{OUTSIDER}:{PASSWORD}\n")
    confd = f"{BASE}/jupyterhub_config.d"
    hub.sh(f"{UNCOMMENT} {EXAMPLE} > {confd}/40-{FLAVOR}.py")
    ct.write_file(f"{confd}/20-test-driver.py", DRIVER_CONFIG)
    hub.reload_hub()

    assert hub.login(USER, "wrong-" + PASSWORD)[0] == 403, "a wrong PAM password is refused"
    assert hub.login(OUTSIDER, PASSWORD)[0] == 403, "a user outside allowed_groups is refused"
    code, jar = hub.login(USER, PASSWORD)
    assert code == 302, "the right PAM password logs in"
    t0 = time.monotonic()
    code, _ = hub.curl("/hub/spawn", "-b", str(jar), "-c", str(jar), token=None)
    assert code in (200, 302), code
    hub.wait_for(lambda: hub.server().get("ready"), 90, what=f"{USER}'s server")
    report(f"systemdspawner: login + spawn until ready: {time.monotonic() - t0:.1f}s")


def test_server_is_its_own_unit_running_as_the_user(ct, hub):
    props = hub.show(UNIT, "ActiveState", "MainPID", "MemoryMax", "CPUQuotaPerSecUSec", "Slice",
                     "NoNewPrivileges", "PrivateTmp", "TasksMax", "ControlGroup")
    assert props["ActiveState"] == "active", props
    pid = int(props["MainPID"])
    assert pid > 0
    ps = ct.exec(["ps", "-o", "user=,args=", "-p", str(pid)]).stdout.strip()
    user, args = ps.split(None, 1)
    assert user == USER, ps
    assert f"{BASE}/hub/bin/jupyterhub-singleuser" in args, ps
    # the unit's own cgroup, in the example's slice, not the hub's
    assert props["ControlGroup"] == f"/jupyter.slice/{UNIT}", props
    assert f"0::/jupyter.slice/{UNIT}" in ct.read_file(f"/proc/{pid}/cgroup")
    # the example's limits and sandboxing, as systemd properties of the unit
    assert props["MemoryMax"] == str(4 << 30) and props["CPUQuotaPerSecUSec"] == "2s", props
    assert props["TasksMax"] == "512" and props["Slice"] == "jupyter.slice", props
    assert props["NoNewPrivileges"] == "yes" and props["PrivateTmp"] == "yes", props
    # served through the proxy: the hub's state is the unit's
    assert hub.server()["state"].get("unit_name") == UNIT.removesuffix(".service")


@pytest.fixture(scope="module")
def user_token(hub):
    code, body = hub.api(f"/users/{USER}/tokens", "POST", {"note": "probe", "expires_in": 3600})
    assert code == 201, body
    return body["token"]


def test_server_survives_hub_restart(ct, hub, user_token, tmp_path):
    server_pid = hub.main_pid(UNIT)
    stop, out = tmp_path / "stop", tmp_path / "http.jsonl"
    probe = subprocess.Popen(ct.host_netns_cmd([sys.executable, str(PROBES), "http", f"{URL}/user/{USER}/api/status",
                                                "--token", user_token, "--out", str(out), "--stop-file", str(stop)]),
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and '"code": 200' in out.read_text(), 30, what="the probe to succeed")
        hub_pid = hub.main_pid("jupyterhub.service")
        t0 = time.monotonic()
        hub.systemctl("restart", "jupyterhub")
        wait_for(hub.up, 60, what="hub API after restart")
        back = time.monotonic() - t0
        time.sleep(2)
    finally:
        stop.touch()
        try:
            probe.wait(20)
        except subprocess.TimeoutExpired:
            probe.kill()
    records, summary = read_results(out)
    assert summary is not None, f"probe died: {probe.stderr.read()}"
    report(f"systemdspawner: systemctl restart jupyterhub: API back after {back:.1f}s; "
           f"/user/{USER}/api/status {summary['ok']} ok / {summary['failed']} failed")
    assert summary["failed"] == 0, [r for r in records if r["code"] != 200]
    assert summary["ok"] >= 8
    assert hub.main_pid("jupyterhub.service") not in (0, hub_pid)
    assert hub.main_pid(UNIT) == server_pid, "the same unit and process kept serving"
    # the new hub polled the unit and still knows the server as running
    server = hub.server()
    assert server.get("ready") and not server.get("stopped"), server
    assert hub.curl(f"/user/{USER}/api/status", token=user_token)[0] == 200


def test_shipped_idle_culler_stops_the_unit(ct, hub):
    confd = f"{BASE}/jupyterhub_config.d"
    hub.sh(f"cp {confd}/50-idle-culler.py.example {confd}/50-idle-culler.py")
    ct.write_file(f"{confd}/60-short-culler.py",
                  'culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")\n'
                  'culler["command"][3:] = ["--timeout=10", "--cull-every=5"]\n')
    assert hub.systemctl("is-active", UNIT).stdout.strip() == "active"
    hub.reload_hub()
    t0 = time.monotonic()
    # active -> deactivating (the server shuts down) -> inactive, or gone once collected
    wait_for(lambda: hub.systemctl("is-active", UNIT, check=False).stdout.strip() in ("inactive", "failed"), 90,
             what=f"the culler to stop {UNIT}")
    report(f"systemdspawner: idle culler (--timeout=10 --cull-every=5) stopped {UNIT} "
           f"{time.monotonic() - t0:.1f}s after the hub came back")
    assert hub.main_pid(UNIT) == 0
    # the hub logs the culler's request once the stop it waits for is done: a moment after the unit ends
    culled = f"journalctl -u jupyterhub --no-pager -o cat | grep 'DELETE /hub/api/users/{USER}/server'"
    wait_for(lambda: "idle-culler" in hub.sh(culled, check=False).stdout, 30, what="the culler's DELETE in the journal")
    wait_for(lambda: hub.server() == {}, 30, what="the hub to record the server as stopped")
    assert ct.exec(["pgrep", "-u", USER], check=False).stdout.strip() == "", "nothing of the user's left running"
