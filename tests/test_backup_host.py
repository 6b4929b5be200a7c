"""Backup under load and restore into a second base, with the real hub and traefik
(the host end-to-end fixtures of tests/test_e2e_host.py: an env from the lock, the
rendered units' ExecStart lines, no systemd).

1. base A serves a logged-in user's running server; `barehub backup` runs back to
   back for 5 s while a probe requests the hub's API and the user's server every 0.1 s:
   0 failed requests;
2. A's hub and proxy stop (the user's server keeps running); a fresh base B is
   installed and `barehub restore` puts the archive into it;
3. B's proxy and hub start: the hub re-adopts the server that still runs (same
   process), and the user's token made in A works through B's proxy.

The env gets a barehub wheel built from this checkout (in a private copy of the
wheelhouse): build/wheels may hold another checkout's.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from conftest import install_base
from helpers import REPO, Proc, report, unit_command, wait_for
import test_e2e_host
from test_e2e_host import USER, http

# the host end-to-end fixtures (module-scoped: this module gets its own base and hub)
local_user, installed, running = test_e2e_host.local_user, test_e2e_host.installed, test_e2e_host.running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheelhouse(scratch):
    """build/wheels, with barehub's wheel built from this checkout (offline, its backend from there)."""
    from conftest import WHEELS

    if not any(WHEELS.glob("hatchling-*.whl")):
        subprocess.run(["make", "-C", str(REPO), "wheels"], check=True)
    own = scratch / "wheels"
    own.mkdir(exist_ok=True)
    for w in WHEELS.glob("*.whl"):
        if not w.name.startswith("barehub-"):
            (own / w.name).symlink_to(w)
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-index", "--find-links", str(WHEELS), "--wheel-dir", str(own), str(REPO)], check=True)
    return own


def barehub_in(base, *args):
    return subprocess.run([str(base / "hub" / "bin" / "python"), "-m", "barehub", *args, "--base", str(base)],
                          capture_output=True, text=True, timeout=300)


def test_backup_under_load_then_restore_readopts_the_server(installed, running, scratch, wheelhouse):
    url, token, base = installed["url"], installed["token"], installed["base"]
    r = barehub_in(base, "backup", "--help")
    assert r.returncode == 0, f"the env's barehub has no `backup` command:\n{r.stderr}"
    status, body = http(f"{url}/hub/api/users/{USER}", token=token, method="POST")
    assert status in (201, 409), body
    status, body = http(f"{url}/hub/api/users/{USER}/server", token=token, method="POST", timeout=60)
    assert status in (201, 202, 400), body

    def ready():
        s, b = http(f"{url}/hub/api/users/{USER}", token=token)
        return s == 200 and json.loads(b)["servers"].get("", {}).get("ready")

    wait_for(ready, 90, what="user server ready")
    status, body = http(f"{url}/hub/api/users/{USER}/tokens", token=token, method="POST",
                        data=json.dumps({"note": "before backup"}).encode())
    assert status == 201, body
    user_token = json.loads(body)["token"]
    server_pid = json.loads(http(f"{url}/hub/api/users/{USER}", token=token)[1])["servers"][""]["state"]["pid"]
    status_url = f"{url}/user/{USER}/api/status"

    # --- 1. three backups while a probe hits the hub's API and the user's server
    results: list[tuple[str, int | str]] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            for what, u, t in (("hub", f"{url}/hub/api/users/{USER}", token), ("server", status_url, user_token)):
                try:
                    code = http(u, token=t, timeout=5)[0]
                except Exception as e:  # noqa: BLE001 - a refused or reset connection is a failure
                    code = type(e).__name__
                results.append((what, code))
            stop.wait(0.1)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    out = scratch / "backups"
    out.mkdir(exist_ok=True)
    t0, n = time.monotonic(), 0
    while n < 3 or time.monotonic() - t0 < 5:  # back to back for 5 s at least
        r = barehub_in(base, "backup", "-o", str(out))
        assert r.returncode == 0, r.stdout + r.stderr
        n += 1
    took = time.monotonic() - t0
    time.sleep(1)
    stop.set()
    t.join(10)
    failures = [r for r in results if r[1] != 200]
    report(f"backup under load: {n} backups in {took:.1f}s, {len(results)} requests, {len(failures)} failed")
    assert len(results) >= 10 and failures == []
    archive = max(out.iterdir(), key=lambda p: p.stat().st_mtime)

    # --- 2. A stops (the server keeps running); B is a fresh install; restore into it
    procs = running["procs"]
    procs["hub"].stop(30)
    procs["proxy"].stop(30)
    os.kill(server_pid, 0)  # still running
    b = scratch / "restored-base"
    install_base(b, wheelhouse)
    r = barehub_in(b, "restore", str(archive), "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (b / "barehub.toml").read_bytes() == (base / "barehub.toml").read_bytes()

    # --- 3. B starts, re-adopts the server, and the token made in A works through B
    started: list[Proc] = []

    def start(unit):
        argv, env_add, cwd, _user = unit_command(b / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        p = Proc(argv, env=env, cwd=cwd, log=scratch / f"restored-{unit}.log", name=unit)
        started.append(p)
        return p

    try:
        start("jupyterhub-proxy.service")
        hub = start("jupyterhub.service")
        wait_for(lambda: http(f"{url}/hub/api/", timeout=2)[0] == 200, 60, what="restored hub through traefik")
        info = json.loads(http(f"{url}/hub/api/users/{USER}", token=token)[1])
        assert info["servers"][""]["ready"], hub.tail()
        assert info["servers"][""]["state"]["pid"] == server_pid
        wait_for(lambda: http(status_url, token=user_token, timeout=5)[0] == 200, 30,
                 what="the user's server through the restored hub's proxy")
        http(f"{url}/hub/api/users/{USER}/server", token=token, method="DELETE", timeout=30)
    finally:
        for p in reversed(started):
            p.stop(30)
