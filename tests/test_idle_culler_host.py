"""Host test of the idle culler as an admin enables it, with a real hub and traefik.

Like tests/test_e2e_host.py: the pinned environment as a venv at BASE/envs/<version>,
post_install.sh with --no-start, traefik and the hub started from the rendered units'
ExecStart lines. Then: copy the shipped 50-idle-culler.py.example to 50-idle-culler.py,
add a later 60-short.py that shortens its options (the way the example says), start a
user server, leave it alone, and check that the culler stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time

import pytest

import helpers
from conftest import install_base, require_root
from helpers import Proc, http, report, unit_command, wait_for

pytestmark = pytest.mark.e2e

USER = "barehub-cull"




@pytest.fixture(scope="module")
def culled_base(scratch, wheelhouse):
    require_root()
    with helpers.local_user(USER):
        base = scratch / "cull-base"
        _, url, _ = install_base(base, wheelhouse)
        yield base, url


def test_enabled_culler_stops_an_idle_server(culled_base, scratch):
    base, url = culled_base
    confd = base / "jupyterhub_config.d"
    example = confd / "50-idle-culler.py.example"
    assert example.is_file(), sorted(p.name for p in confd.iterdir())
    assert f"{base}/hub/bin/python" in example.read_text()

    token = secrets.token_hex(16)
    (confd / "20-driver.py").write_text(
        f'c.Authenticator.allowed_users = {{"{USER}"}}\n'
        f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{token}"}}]\n'
        'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
        '    "scopes": ["admin:users", "admin:servers"]}]\n'
        'c.Spawner.start_timeout = 60\n'
    )
    # what the admin does: one copy enables it
    shutil.copy(example, confd / "50-idle-culler.py")
    (confd / "60-short.py").write_text(
        'culler = next(s for s in c.JupyterHub.services if s["name"] == "idle-culler")\n'
        'culler["command"][3:] = ["--timeout=10", "--cull-every=5"]\n'
    )

    logs = scratch / "cull-logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        for unit in ("jupyterhub-proxy.service", "jupyterhub.service"):
            argv, env_add, cwd, _user = unit_command(base / "generated" / unit)
            env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
            procs.append(Proc(argv, env=env, cwd=cwd, log=logs / f"{unit}.log", name=unit))
        hub = procs[1]
        try:
            wait_for(lambda: http(f"{url}/hub/api/", token)[0] == 200, 60, what="hub through traefik")
        except TimeoutError:
            pytest.fail("hub not reachable:\n" + hub.tail() + "\n" + procs[0].tail())

        status, body = http(f"{url}/hub/api/users/{USER}/server", token, method="POST", timeout=60)
        assert status in (201, 202), body

        def server():
            return json.loads(http(f"{url}/hub/api/users/{USER}", token)[1])["servers"].get("")

        try:
            wait_for(lambda: (server() or {}).get("ready"), 90, what="user server ready")
        except TimeoutError:
            pytest.fail("server never ready:\n" + hub.tail(60))
        pid = server()["state"]["pid"]
        ready_at = time.monotonic()

        # nobody touches it: the culler (timeout 10 s, every 5 s) must stop it
        try:
            wait_for(lambda: server() is None, 60, interval=0.5, what="culler to stop the idle server")
        except TimeoutError:
            pytest.fail("idle server not culled within 60 s:\n" + hub.tail(60))
        culled_after = time.monotonic() - ready_at
        report(f"idle culler (--timeout=10 --cull-every=5): server stopped {culled_after:.1f}s after ready")

        log = hub.log.read_text(errors="replace")
        assert "idle-culler" in log and "Culling server" in log, hub.tail(60)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 15, what="server process gone")
        # the hub launched the culler with the example's python (through the hub link)
        # and the options of the later file
        assert (f"Starting service 'idle-culler': ['{base}/hub/bin/python', '-m', 'jupyterhub_idle_culler', "
                "'--timeout=10', '--cull-every=5']") in log, hub.tail(60)
    finally:
        for p in reversed(procs):
            p.stop(30)
