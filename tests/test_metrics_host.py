"""Metrics from a running install, the way Prometheus scrapes them (docs/metrics.md).

A base installed by post_install.sh with `[metrics] enabled = true`, traefik and the
hub started with the rendered units' ExecStart lines, the shipped
60-metrics.py.example enabled as its first lines say. Then: traefik's /metrics on its
own entry point counts the requests to a user's route, and /hub/metrics, with the
token that has only read:metrics, counts the running servers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import tomllib
import urllib.error
import urllib.request

import pytest

import helpers
from barehub import settings
from barehub.install import Context, proxy_files
from barehub.layout import Layout
from conftest import install_base, require_root
from helpers import Proc, free_ports, unit_command, wait_for

USER = "barehub-metrics"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def http(url, *, token=None, bearer=None, method="GET", data=None, timeout=10):
    req = urllib.request.Request(url, method=method, data=None if data is None else json.dumps(data).encode())
    if token:
        req.add_header("Authorization", f"token {token}")
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out.append((m[1], dict(LABEL.findall(m[2] or "")), float(m[3])))
    return out


def value(found, name: str, **labels: str) -> float | None:
    matching = [v for n, ls, v in found if n == name and all(ls.get(k) == want for k, want in labels.items())]
    assert len(matching) <= 1, f"{name}{labels} matches {len(matching)} samples"
    return matching[0] if matching else None


def test_metrics_are_off_by_default_and_on_their_own_entry_point(tmp_path):
    lay = Layout.at(tmp_path / "b")

    def static(text: str) -> dict:
        files = proxy_files(Context(lay, settings.parse(text), tmp_path))
        return tomllib.loads(files[lay.traefik_toml][0])

    off = static("")
    assert "metrics" not in off and set(off["entryPoints"]) == {"web", "hubapi"}
    on = static('[metrics]\nenabled = true\naddress = "10.0.0.7"\nport = 9182\n')
    assert on["entryPoints"]["metrics"]["address"] == "10.0.0.7:9182"
    assert on["metrics"] == {"prometheus": {"entryPoint": "metrics", "addRoutersLabels": True,
                                            "addServicesLabels": True, "addEntryPointsLabels": True}}


@pytest.fixture(scope="module")
def local_user():
    require_root()
    with helpers.local_user(USER) as name:
        yield name


@pytest.fixture(scope="module")
def running(scratch, wheelhouse, local_user):
    base = scratch / "metrics-base"
    (metrics_port,) = free_ports(1)
    _prefix, url, _ = install_base(base, wheelhouse, f"[metrics]\nenabled = true\nport = {metrics_port}\n")
    lay = Layout.at(base)
    driver = secrets.token_hex(16)
    confd = base / "jupyterhub_config.d"
    (confd / "10-driver.py").write_text(
        f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{driver}"}}]\n'
        'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
        '    "scopes": ["admin:users", "admin:servers", "tokens"]}]\n'
        f'c.Authenticator.allowed_users = {{"{local_user}"}}\n'
        'c.Spawner.start_timeout = 60\n'
    )
    # what the example's first lines tell the admin to do
    example = confd / "60-metrics.py.example"
    assert stat.S_IMODE(example.stat().st_mode) == 0o644
    token = secrets.token_hex(32)
    token_file = lay.state / "metrics-token"
    assert f'token_file = Path("{token_file}")' in example.read_text()
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (token + "\n").encode())
    os.close(fd)
    shutil.copy(example, confd / "60-metrics.py")

    logs = scratch / "metrics-logs"
    logs.mkdir(exist_ok=True)
    procs = {}
    for name, unit in (("proxy", "jupyterhub-proxy.service"), ("hub", "jupyterhub.service")):
        argv, env_add, cwd, _user = unit_command(base / "generated" / unit)
        procs[name] = Proc(argv, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}, cwd=cwd,
                           log=logs / f"{unit}.log", name=unit)
    hub_port = settings.load(lay.settings_file)["hub.port"]
    try:
        try:
            wait_for(lambda: http(url + "/hub/api/")[0] == 200, 60, what="hub through traefik")
        except TimeoutError:
            pytest.fail("hub not reachable through traefik:\n" + procs["hub"].tail() + "\n" + procs["proxy"].tail())
        yield {"base": base, "url": url, "driver": driver, "token": token, "lay": lay,
               "traefik_metrics": f"http://127.0.0.1:{metrics_port}/metrics",
               "hub_metrics": f"http://127.0.0.1:{hub_port}/hub/metrics", "procs": procs}
    finally:
        if procs["hub"].alive():
            http(f"{url}/hub/api/users/{USER}/server", token=driver, method="DELETE", timeout=30)
        for p in (procs["hub"], procs["proxy"]):
            p.stop(30)


def scrape_hub(running, token) -> tuple[int, list]:
    status, body = http(running["hub_metrics"], bearer=token)
    return status, samples(body.decode()) if status == 200 else body


def test_traefik_and_hub_metrics(running):
    url, driver = running["url"], running["driver"]
    # the hub's metrics: only with a read:metrics token (sent as Prometheus does, Bearer)
    assert http(running["hub_metrics"])[0] == 403
    assert http(running["hub_metrics"], bearer=driver)[0] == 403, "the driver's admin scopes lack read:metrics"
    assert http(f"{url}/hub/api/users", token=running["token"])[0] == 403, "the metrics token can only read metrics"
    status, hub = scrape_hub(running, running["token"])
    assert status == 200, hub
    assert value(hub, "jupyterhub_running_servers") == 0
    assert value(hub, "jupyterhub_total_users") == 1  # allowed_users

    # a user's server, requested N times through traefik
    status, body = http(f"{url}/hub/api/users/{USER}/server", token=driver, method="POST", timeout=60)
    assert status in (201, 202), body

    def ready():
        s, b = http(f"{url}/hub/api/users/{USER}", token=driver)
        return s == 200 and json.loads(b)["servers"].get("", {}).get("ready")

    try:
        wait_for(ready, 90, what="user server ready")
    except TimeoutError:
        pytest.fail("server never ready:\n" + running["procs"]["hub"].tail(60))
    status, body = http(f"{url}/hub/api/users/{USER}/tokens", token=driver, method="POST",
                        data={"note": "metrics test", "expires_in": 3600})
    assert status == 201, body
    user_token = json.loads(body)["token"]
    n = 3
    for _ in range(n):
        assert http(f"{url}/user/{USER}/api/status", token=user_token)[0] == 200

    # the router jupyterhub-traefik-proxy wrote for the user's server
    rules = tomllib.loads(running["lay"].rules_file.read_text())["http"]["routers"]
    (router,) = [name for name, r in rules.items() if f"/user/{USER}/" in r["rule"]]
    status, body = http(running["traefik_metrics"])
    assert status == 200, body
    proxy = samples(body.decode())
    assert value(proxy, "traefik_router_requests_total", router=f"{router}@file", code="200", method="GET") == n
    service = rules[router]["service"]
    assert value(proxy, "traefik_service_requests_total", service=f"{service}@file", code="200", method="GET") == n
    assert value(proxy, "traefik_open_connections", entrypoint="metrics", protocol="TCP") == 1
    assert value(proxy, "traefik_config_last_reload_success") > 0
    # the users' entry point does not serve them
    status, body = http(f"{url}/metrics")
    assert b"traefik_" not in body

    status, hub = scrape_hub(running, running["token"])
    assert status == 200 and value(hub, "jupyterhub_running_servers") == 1
    assert http(f"{url}/hub/api/users/{USER}/server", token=driver, method="DELETE", timeout=30)[0] in (202, 204)
    wait_for(lambda: value(scrape_hub(running, running["token"])[1], "jupyterhub_running_servers") == 0, 30,
             what="running servers back to 0")
