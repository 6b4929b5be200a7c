"""Host end-to-end test in a real browser: log in, start JupyterLab, run a cell.

The installed base is reproduced as in test_e2e_host.py (a venv from the lock
at BASE/envs/<version>, post_install.sh with constructor's environment and
BAREHUB_NO_START=1, traefik and the hub started from the rendered units'
ExecStart lines, the shared-password authenticator and a local user), here
with JupyterLab and ipykernel in the env (tests/singleuser-requirements.txt).
Then Debian's headless chromium, driven by Playwright (tests/browser.py),
logs in through traefik, starts the server, opens a Python 3 notebook and runs
print(6*7).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import helpers
from conftest import install_base, require_root
from helpers import Proc, unit_command, wait_for

pytestmark = pytest.mark.e2e

USER = "barehub-browser"
PASSWORD = "browser-user-password"


def require_browser():
    require_root()
    if not os.access("/usr/bin/chromium", os.X_OK):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (`make test-deps` installs it as root)")
    pytest.importorskip("playwright", reason="needs the playwright package (tests/requirements.txt)")


def status(url: str, *, token: str | None = None, method: str = "GET", timeout: float = 5) -> int:
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def lab_user():
    require_browser()
    with helpers.local_user(USER) as name:
        yield name


@pytest.fixture(scope="module")
def hub(scratch, wheelhouse, lab_user):
    """traefik and the hub of a base installed by post_install.sh, serving on 127.0.0.1."""
    t0 = time.monotonic()
    base = scratch / "browser-base"
    prefix, url, _ = install_base(base, wheelhouse)
    token = secrets.token_hex(16)
    (base / "jupyterhub_config.d" / "10-auth.py").write_text(
        'c.JupyterHub.authenticator_class = "shared-password"\n'
        f'c.SharedPasswordAuthenticator.user_password = "{PASSWORD}"\n'
        f'c.Authenticator.allowed_users = {{"{lab_user}"}}\n'
        f'c.JupyterHub.services = [{{"name": "browser-test", "api_token": "{token}"}}]\n'
        'c.JupyterHub.load_roles = [{"name": "browser-test", "services": ["browser-test"],\n'
        '    "scopes": ["admin:servers"]}]\n'
        'c.Spawner.start_timeout = 60\n'
    )
    logs = scratch / "browser-logs"
    logs.mkdir(exist_ok=True)

    def start(unit: str) -> Proc:
        argv, env_add, cwd, _user = unit_command(base / "generated" / unit)
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        return Proc(argv, env=env, cwd=cwd, log=logs / f"{unit}.log", name=unit)

    proxy, hub = start("jupyterhub-proxy.service"), start("jupyterhub.service")
    try:
        wait_for(lambda: status(url + "/hub/api/") == 200, 60, what="hub through traefik")
    except TimeoutError:
        pytest.fail("hub not reachable through traefik:\n" + hub.tail() + "\n" + proxy.tail())
    print(f"install + hub start: {time.monotonic() - t0:.1f}s")
    yield {"url": url, "hub": hub, "proxy": proxy}
    if hub.alive():
        status(f"{url}/hub/api/users/{lab_user}/server", token=token, method="DELETE", timeout=30)
    for p in (hub, proxy):
        p.stop(30)


def test_notebook_runs_a_cell_in_the_browser(hub, lab_user, tmp_path: Path):
    from browser import run_lab_session

    shot = tmp_path / "lab.png"
    t0 = time.monotonic()
    try:
        output = run_lab_session(hub["url"], lab_user, PASSWORD, "print(6*7)", screenshot=shot, timeout=150)
    except Exception:
        print("hub log:\n" + hub["hub"].tail(60))
        raise
    print(f"browser session: {time.monotonic() - t0:.1f}s; screenshot: {shot}")
    assert output == "42"
