"""Host end-to-end test, the way an admin would run barehub, without systemd.

1. reproduce the installed prefix from the lock, as a venv from /usr/bin/python3,
   at BASE/envs/<version>;
2. run post_install.sh with constructor's environment and --no-start;
3. start traefik and the hub with the exact ExecStart lines of the rendered units;
4. log in through traefik (shared-password authenticator, a local user), start a
   server with JupyterHub's default spawner, get /user/<name>/api/status;
5. restart the hub while a probe requests that URL every 0.25 s: 0 failures.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

import helpers
from conftest import install_base, require_root
from helpers import Proc, unit_command, version, wait_for, report

pytestmark = pytest.mark.e2e

USER = "barehub-e2e"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(url, *, token=None, method="GET", data=None, opener=None, timeout=5):
    req = urllib.request.Request(url, method=method, data=data)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def local_user():
    require_root()
    with helpers.local_user(USER) as name:
        yield name


@pytest.fixture(scope="module")
def installed(scratch, wheelhouse, local_user):
    """A base installed by post_install.sh into BASE/envs/<version>, nothing started."""
    base = scratch / "e2e-base"
    prefix, url, result = install_base(base, wheelhouse)
    service_token = secrets.token_hex(16)
    assert "nothing was started" in result.stdout
    confd = base / "jupyterhub_config.d"
    (confd / "10-auth.py").write_text(
        'c.JupyterHub.authenticator_class = "shared-password"\n'
        'c.SharedPasswordAuthenticator.user_password = "e2e-user-password"\n'
        f'c.Authenticator.allowed_users = {{"{local_user}"}}\n'
    )
    (confd / "20-driver.py").write_text(
        f'c.JupyterHub.services = [{{"name": "e2e", "api_token": "{service_token}"}}]\n'
        'c.JupyterHub.load_roles = [{"name": "e2e", "services": ["e2e"],\n'
        '    "scopes": ["admin:users", "admin:servers", "tokens"]}]\n'
        'c.Spawner.start_timeout = 60\n'
    )
    return {"base": base, "prefix": prefix, "url": url, "token": service_token}


@pytest.fixture(scope="module")
def running(installed, scratch):
    base = installed["base"]
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)

    def start(unit: str, n: int = 0) -> Proc:
        argv, env_add, cwd, _user = unit_command(base / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        return Proc(argv, env=env, cwd=cwd, log=logs / f"{unit}.{n}.log", name=unit)

    procs = {"proxy": start("jupyterhub-proxy.service"), "hub": start("jupyterhub.service")}
    state = {"procs": procs, "start": start, "hub_runs": 1}
    try:
        wait_for(lambda: http(installed["url"] + "/hub/api/")[0] == 200, 60, what="hub through traefik")
    except TimeoutError:
        pytest.fail("hub not reachable through traefik:\n" + procs["hub"].tail() + "\n" + procs["proxy"].tail())
    yield state
    url, token = installed["url"], installed["token"]
    if procs["hub"].alive():
        http(f"{url}/hub/api/users/{USER}/server", token=token, method="DELETE", timeout=30)
    for p in (procs["hub"], procs["proxy"]):
        p.stop(30)


def test_generated_units_point_into_the_base(installed):
    base, prefix = installed["base"], installed["prefix"]
    argv, env, cwd, user = unit_command(base / "generated" / "jupyterhub.service")
    assert argv[0] == f"{base}/hub/bin/jupyterhub"
    assert env["BAREHUB_BASE"] == str(base)
    assert cwd == str(base / "state") and user == "root"
    # the hidden config lives inside the package, reached through the hub link
    config = argv[1].split("=", 1)[1]
    assert config.startswith(f"{base}/hub/lib/") and config.endswith("/barehub/jupyterhub_config.py")
    assert Path(config).resolve().is_relative_to(prefix.resolve())
    assert os.readlink(base / "hub") == f"envs/{version()}"


def test_login_spawn_and_restart_without_failures(installed, running):
    url, token = installed["url"], installed["token"]

    # --- log in through traefik with the login form, as a browser does
    jar = CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    status, _ = http(f"{url}/hub/login", opener=browser)
    assert status == 200
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    bad = urllib.parse.urlencode({"username": USER, "password": "wrong-password", "_xsrf": xsrf}).encode()
    assert http(f"{url}/hub/login", method="POST", data=bad, opener=browser)[0] == 403
    form = urllib.parse.urlencode({"username": USER, "password": "e2e-user-password", "_xsrf": xsrf}).encode()
    status, _ = http(f"{url}/hub/login", method="POST", data=form, opener=browser)
    assert status == 302
    assert any(c.name == "jupyterhub-hub-login" for c in jar), "no login cookie after login"
    status, body = http(f"{url}/hub/home", opener=browser)
    assert status == 200 and USER.encode() in body

    # --- start a server with JupyterHub's default spawner (a local process as the user)
    status, body = http(f"{url}/hub/api/users/{USER}/server", token=token, method="POST", timeout=60)
    assert status in (201, 202), body

    def ready():
        s, b = http(f"{url}/hub/api/users/{USER}", token=token)
        return s == 200 and json.loads(b)["servers"].get("", {}).get("ready")

    try:
        wait_for(ready, 90, what="user server ready")
    except TimeoutError:
        pytest.fail("server never ready:\n" + running["procs"]["hub"].tail(60))
    status, body = http(f"{url}/hub/api/users/{USER}/tokens", token=token, method="POST",
                        data=json.dumps({"note": "e2e", "expires_in": 3600}).encode())
    assert status == 201, body
    user_token = json.loads(body)["token"]
    status_url = f"{url}/user/{USER}/api/status"
    status, body = http(status_url, token=user_token)
    assert status == 200, body
    server_pid = json.loads(http(f"{url}/hub/api/users/{USER}", token=token)[1])["servers"][""]["state"]["pid"]
    assert pwd.getpwuid(os.stat(f"/proc/{server_pid}").st_uid).pw_name == USER

    # --- restart the hub while a probe requests the user's server every 0.25 s
    results: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            try:
                code = http(status_url, token=user_token, timeout=2)[0]
            except Exception as e:  # noqa: BLE001 - a refused or reset connection is a failure
                code = type(e).__name__
            results.append((time.monotonic(), code))
            stop.wait(0.25)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    time.sleep(1)
    procs = running["procs"]
    hub_pid = procs["hub"].pid
    t0 = time.monotonic()
    assert procs["hub"].stop(30) is not None
    procs["hub"] = running["start"]("jupyterhub.service", 1)
    wait_for(lambda: http(f"{url}/hub/api/", timeout=2)[0] == 200, 60, what="hub back after restart")
    back = time.monotonic() - t0
    time.sleep(2)
    stop.set()
    t.join(5)

    failures = [(round(ts - t0, 2), code) for ts, code in results if code != 200]
    report(f"hub restart: API back after {back:.1f}s; {len(results)} probes, {len(failures)} failed")
    assert procs["hub"].pid != hub_pid
    assert len(results) >= 8
    assert failures == []
    # the new hub re-adopted the running server: same process, still ready
    info = json.loads(http(f"{url}/hub/api/users/{USER}", token=token)[1])
    assert info["servers"][""]["ready"] and info["servers"][""]["state"]["pid"] == server_pid
    assert re.search(rf"{USER}.*still running", procs["hub"].log.read_text()), procs["hub"].tail()
