"""Backup in one systemd container, restore in a second, log in with the same token.

Both containers install the installer under test offline with `-b`; the first gets a
user with an API token (made through the hub's API) and a driver service in
jupyterhub_config.d/, then `barehub backup` runs while the hub serves. The archive is
copied out, the first container destroyed, and `barehub restore` runs in a fresh
second one under its systemd: it stops the hub, replaces the files, and starts both
units again. The user's token and the service's token then work there.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from helpers import report, wait_for
from system import installers

BASE = "/opt/barehub"
URL = "http://127.0.0.1"  # traefik on port 80, in the container's network namespace
USER = "alice"
TOKEN = secrets.token_hex(16)
DRIVER_CONFIG = (
    f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{TOKEN}"}}]\n'
    'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
    '    "scopes": ["admin:users", "admin:servers", "tokens", "list:users"]}]\n'
    f'c.Authenticator.allowed_users = {{"{USER}"}}\n'
)
INSTALLER = installers.container_path()


@pytest.fixture(scope="module")
def installer_file() -> Path:
    return installers.installer_under_test()


def curl(c, path: str, token: str | None, *args: str) -> tuple[int, str]:
    cmd = ["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"]
    if token:
        cmd += ["-H", f"Authorization: token {token}"]
    r = subprocess.run(c.host_netns_cmd([*cmd, *args, URL + path]), capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def installed(container_factory, installer_file, name: str):
    c = container_factory(name, private_network=True)
    c.push(installer_file, "/root")
    c.exec(["bash", INSTALLER, "-b"], timeout=600)
    wait_for(lambda: curl(c, "/hub/api/", None)[0] == 200, 90, what=f"hub in {name}")
    return c


def test_backup_in_one_container_restore_in_another(container_factory, installer_file, tmp_path):
    a = installed(container_factory, installer_file, "bh-bk-a")
    a.write_file(f"{BASE}/jupyterhub_config.d/20-driver.py", DRIVER_CONFIG)
    a.exec(["systemctl", "reload", "jupyterhub"])
    wait_for(lambda: curl(a, "/hub/api/users", TOKEN)[0] == 200, 90, what="driver service token")
    code, body = curl(a, f"/hub/api/users/{USER}", TOKEN, "-X", "POST")
    assert code in (201, 409), body  # allowed_users may have made it at start-up
    code, body = curl(a, f"/hub/api/users/{USER}/tokens", TOKEN, "-X", "POST",
                      "-d", json.dumps({"note": "before the backup"}))
    assert code == 201, body
    user_token = json.loads(body)["token"]
    code, body = curl(a, "/hub/api/user", user_token)
    assert code == 200 and json.loads(body)["name"] == USER, body

    r = a.exec([f"{BASE}/hub/bin/barehub", "backup", "-o", "/root/"])
    archive_in = r.stdout.split()[1]
    assert archive_in.startswith("/root/barehub-backup-"), r.stdout
    assert a.exec(["stat", "-c", "%a %U", archive_in]).stdout == "600 root\n"
    archive = tmp_path / Path(archive_in).name
    with archive.open("wb") as f:
        subprocess.run(a.nsenter_cmd(["cat", "--", archive_in]), stdout=f, check=True)
    old_secret = a.read_file(f"{BASE}/state/jupyterhub_cookie_secret")
    a.destroy()

    b = installed(container_factory, installer_file, "bh-bk-b")
    assert curl(b, "/hub/api/user", user_token)[0] == 403  # a fresh hub: the token means nothing yet
    b.push(archive, "/root")
    r = b.exec([f"{BASE}/hub/bin/barehub", "restore", f"/root/{archive.name}"], timeout=300)
    report(f"restore in a systemd container: {r.stdout.strip().splitlines()[-1]}")
    assert "stopping jupyterhub.service" in r.stdout, r.stdout
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service"):
        assert b.exec(["systemctl", "is-active", unit], check=False).stdout == "active\n", unit
    try:
        wait_for(lambda: curl(b, "/hub/api/", None)[0] == 200, 90, what="restored hub")
    except TimeoutError:
        pytest.fail("the restored hub does not answer:\n" + r.stdout + "\n" + b.exec(
            ["journalctl", "-u", "jupyterhub", "-u", "jupyterhub-proxy", "-n", "80", "--no-pager"]).stdout)
    code, body = curl(b, "/hub/api/user", user_token)
    assert code == 200 and json.loads(body)["name"] == USER, body
    code, body = curl(b, f"/hub/api/users/{USER}", TOKEN)
    assert code == 200, body
    assert b.read_file(f"{BASE}/state/jupyterhub_cookie_secret") == old_secret
    assert b.exec(["sh", "-c", f"ls -d {BASE}/restore-kept-*"]).returncode == 0
