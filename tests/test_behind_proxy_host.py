"""barehub behind a site's reverse proxy that terminates TLS (docs/behind-a-proxy.md).

Debian's nginx in front, with a self-signed certificate for hub.example.test, talks
plain HTTP to traefik from 127.0.0.2, the only address in proxy.trusted_proxies
(loopback has all of 127/8). The test's own requests straight to traefik come from
127.0.0.1: untrusted. Then: log in, spawn, the OAuth redirect the hub builds is
https:// on the outer host name, a kernel's websocket works through both proxies,
and X-Forwarded-* headers sent by an untrusted client are replaced.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.parse
import uuid
from http.cookies import SimpleCookie

import pytest

import helpers
from barehub import settings
from barehub.layout import Layout
from conftest import install_base, require_root
from helpers import Proc, free_ports, unit_command, wait_for

USER = "barehub-behind"
PASSWORD = "behind-a-proxy-password"
OUTER = "hub.example.test"
NGINX = "/usr/sbin/nginx"
ECHO = "/barehub-test-echo"

NGINX_CONF = """\
daemon off;
master_process on;
user root root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {outer};
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            # connect from the one address barehub trusts
            proxy_bind 127.0.0.2;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Scheme "";
            proxy_set_header Forwarded "";
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1d;
            proxy_buffering off;
        }}
    }}
}}
"""

ECHO_RULES = """\
# test only: a route to a server that answers with the headers it got
[http.routers.barehub-test-echo]
  rule = "PathPrefix(`{path}`)"
  entryPoints = ["web"]
  service = "barehub-test-echo"
  priority = 100000
[http.services.barehub-test-echo.loadBalancer]
  [[http.services.barehub-test-echo.loadBalancer.servers]]
    url = "http://127.0.0.1:{port}"
"""


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Client:
    """Requests without following redirects, with a cookie jar, through nginx (https)
    or straight to traefik (http)."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, host_header: str | None = None):
        self.host, self.port, self.tls = host, port, tls
        self.host_header = host_header or f"{host}:{port}"
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
        conn = (http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=30) if self.tls
                else http.client.HTTPConnection(self.host, self.port, timeout=30))
        h = {"Host": self.host_header, **(headers or {})}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        set_cookies = r.headers.get_all("Set-Cookie") or []
        for raw in set_cookies:
            for name, morsel in SimpleCookie(raw).items():
                self.cookies[name] = morsel.value
        return r.status, r.headers, data, set_cookies


def local_path(location: str) -> str:
    parts = urllib.parse.urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture(scope="module")
def local_user():
    require_root()
    with helpers.local_user(USER) as name:
        yield name


@pytest.fixture(scope="module")
def stack(scratch, wheelhouse, local_user):
    if not os.path.exists(NGINX):
        pytest.skip(f"{NGINX} is missing: `apt-get install nginx-light` (make apt-deps)")
    base = scratch / "behind-base"
    _prefix, url, _ = install_base(base, wheelhouse, proxy_settings='http_address = "127.0.0.1"\n'
                                   'trusted_proxies = ["127.0.0.2"]\n')
    lay = Layout.at(base)
    s = settings.load(lay.settings_file)
    http_port, hub_port = s["proxy.http_port"], s["hub.port"]
    driver = uuid.uuid4().hex
    (lay.config_d / "10-auth.py").write_text(
        'c.JupyterHub.authenticator_class = "shared-password"\n'
        f'c.SharedPasswordAuthenticator.user_password = "{PASSWORD}"\n'
        f'c.Authenticator.allowed_users = {{"{local_user}"}}\n'
        f'c.JupyterHub.services = [{{"name": "driver", "api_token": "{driver}"}}]\n'
        'c.JupyterHub.load_roles = [{"name": "driver", "services": ["driver"],\n'
        '    "scopes": ["admin:users", "admin:servers", "tokens"]}]\n'
        'c.Spawner.start_timeout = 60\n'
    )
    # the echo server and its route (test only)
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    (lay.rules_dir / "test-echo.toml").write_text(ECHO_RULES.format(path=ECHO, port=echo.server_address[1]))

    # nginx in front, terminating TLS with a self-signed certificate
    ngx = scratch / "behind-nginx"
    ngx.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", f"/CN={OUTER}", "-addext", f"subjectAltName=DNS:{OUTER},IP:127.0.0.1",
                    "-keyout", str(ngx / "key.pem"), "-out", str(ngx / "cert.pem")], check=True, capture_output=True)
    (outer_port,) = free_ports(1)
    (ngx / "nginx.conf").write_text(NGINX_CONF.format(dir=ngx, port=outer_port, outer=OUTER, upstream=http_port))
    tls = ssl.create_default_context(cafile=str(ngx / "cert.pem"))

    logs = scratch / "behind-logs"
    logs.mkdir()
    procs = {}

    def start(name, unit):
        argv, env_add, cwd, _user = unit_command(base / "generated" / unit)
        procs[name] = Proc(argv, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}, cwd=cwd,
                           log=logs / f"{unit}.log", name=unit)

    start("proxy", "jupyterhub-proxy.service")
    start("hub", "jupyterhub.service")
    procs["nginx"] = Proc([NGINX, "-p", str(ngx), "-c", str(ngx / "nginx.conf")], log=logs / "nginx.log", name="nginx")
    outer = lambda: Client("127.0.0.1", outer_port, tls=tls, host_header=f"{OUTER}:{outer_port}")  # noqa: E731
    direct = lambda: Client("127.0.0.1", http_port)  # noqa: E731
    try:
        try:
            wait_for(lambda: outer().request("GET", "/hub/api/")[0] == 200, 60, what="hub through nginx and traefik")
        except (TimeoutError, OSError):
            pytest.fail("hub not reachable through nginx:\n" + procs["hub"].tail() + "\n" + procs["proxy"].tail()
                        + "\n" + (ngx / "error.log").read_text(errors="replace")[-3000:])
        yield {"outer": outer, "direct": direct, "outer_url": f"https://{OUTER}:{outer_port}",
               "direct_url": f"http://127.0.0.1:{http_port}", "driver": driver, "procs": procs,
               "hub_port": hub_port, "tls": tls, "outer_port": outer_port, "start": start, "lay": lay}
    finally:
        if procs["hub"].alive():
            direct().request("DELETE", f"/hub/api/users/{USER}/server", headers={"Authorization": f"token {driver}"})
        for p in (procs["hub"], procs["proxy"], procs["nginx"]):
            p.stop(30)
        echo.shutdown()
        shutil.rmtree(ngx, ignore_errors=True)


def echoed(client: Client, headers: dict | None = None) -> dict:
    status, _h, body, _c = client.request("GET", ECHO, headers=headers)
    assert status == 200, body
    return json.loads(body)


def test_forwarded_headers_only_from_the_trusted_proxy(stack):
    spoof = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "10.6.6.6"}
    # through nginx (from 127.0.0.2, trusted): its headers reach the hub's side unchanged
    got = echoed(stack["outer"](), spoof)
    assert got["x-forwarded-proto"] == "https"
    assert got["x-forwarded-host"] == f"{OUTER}:{stack['outer_port']}"
    assert got["x-forwarded-for"].split(", ")[-2:] == ["127.0.0.1", "127.0.0.2"], got  # client, then nginx
    # straight to traefik (from 127.0.0.1, untrusted): traefik replaces them all
    other = {"X-Scheme": "https", "Forwarded": "proto=https;host=evil.example"}
    got_other = echoed(stack["direct"](), {**spoof, **other})
    helpers.report("behind a proxy: from an untrusted client, traefik passes on "
                   + (", ".join(f"{k}: {got_other[k.lower()]!r}" for k in other if k.lower() in got_other) or "neither")
                   + " of X-Scheme / Forwarded (the hub reads both before X-Forwarded-Proto)")
    got = echoed(stack["direct"](), spoof)
    port = stack["direct_url"].rsplit(":", 1)[1]
    assert (got["x-forwarded-proto"], got["x-forwarded-host"], got["x-forwarded-for"]) == (
        "http", f"127.0.0.1:{port}", "127.0.0.1"), got


def test_login_spawn_redirects_and_websocket_through_the_proxy(stack):
    outer, driver = stack["outer"](), stack["driver"]
    admin = {"Authorization": f"token {driver}"}
    # --- log in with the form, as a browser does
    status, _h, _b, _c = outer.request("GET", "/hub/login")
    assert status == 200 and "_xsrf" in outer.cookies
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD, "_xsrf": outer.cookies["_xsrf"]}).encode()
    status, headers, body, set_cookies = outer.request(
        "POST", "/hub/login", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302, body
    login = next(c for c in set_cookies if c.startswith("jupyterhub-hub-login="))
    assert "secure" in login.lower(), f"the hub saw plain http: {login}"

    # --- a URL the hub builds from the request: for a server that is not running, the
    # hub answers an API request with the absolute URL to start it; https, the outer host
    status, _h, body, _c = outer.request("GET", f"/hub/user/{USER}/api/status")
    assert status == 424, body
    assert f"Restart the server at https://{OUTER}:{stack['outer_port']}/hub/spawn/{USER}" in json.loads(body)["message"]
    # the same straight to traefik with spoofed headers: plain http, the host it was sent to
    direct = stack["direct"]()
    direct.cookies = dict(outer.cookies)
    status, _h, body, _c = direct.request("GET", f"/hub/user/{USER}/api/status", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert status == 424, body
    assert f"Restart the server at {stack['direct_url']}/hub/spawn/{USER}" in json.loads(body)["message"], body

    # --- spawn
    status, _h, body, _c = outer.request("POST", f"/hub/api/users/{USER}/server", headers=admin)
    assert status in (201, 202), body

    def ready():
        s, _h, b, _c = outer.request("GET", f"/hub/api/users/{USER}", headers=admin)
        return s == 200 and json.loads(b)["servers"].get("", {}).get("ready")

    try:
        wait_for(ready, 90, what="user server ready")
    except TimeoutError:
        pytest.fail("server never ready:\n" + stack["procs"]["hub"].tail(60))

    # --- the browser's way into the server: the single-user server sends it through the
    # hub's OAuth and back (redirects relative to the outer URL), then sets its cookie
    status, headers, body, _c = outer.request("GET", f"/user/{USER}/lab")
    assert status == 302, body
    authorize = local_path(headers["Location"])
    assert authorize.startswith("/hub/api/oauth2/authorize?"), authorize
    status, headers, body, _c = outer.request("GET", authorize)
    assert status == 302, body
    callback = headers["Location"]
    assert local_path(callback).startswith(f"/user/{USER}/oauth_callback?"), callback
    status, headers, body, set_cookies = outer.request("GET", local_path(callback))
    assert status == 302, body
    user_cookie = next(c for c in set_cookies if c.startswith(f"jupyterhub-user-{USER}="))
    assert "secure" in user_cookie.lower(), f"the single-user server saw plain http: {user_cookie}"
    status, _h, body, _c = outer.request("GET", f"/user/{USER}/api/status")
    assert status == 200, body

    # --- a kernel and its websocket, through nginx and traefik
    status, _h, body, _c = outer.request("POST", f"/hub/api/users/{USER}/tokens", headers=admin,
                                         body=json.dumps({"note": "behind", "expires_in": 3600}).encode())
    assert status == 201, body
    token = json.loads(body)["token"]
    status, _h, body, _c = outer.request("POST", f"/user/{USER}/api/kernels", body=b'{"name": "python3"}',
                                         headers={"Authorization": f"token {token}"})
    assert status == 201, body
    kernel = json.loads(body)["id"]
    reply = asyncio.run(kernel_info(stack, token, kernel))
    assert reply["header"]["msg_type"] == "kernel_info_reply" and reply["content"]["status"] == "ok", reply


async def kernel_info(stack, token: str, kernel: str) -> dict:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    host = f"{OUTER}:{stack['outer_port']}"
    req = HTTPRequest(f"wss://127.0.0.1:{stack['outer_port']}/user/{USER}/api/kernels/{kernel}/channels",
                      headers={"Authorization": f"token {token}", "Host": host, "Origin": f"https://{host}"},
                      ssl_options=stack["tls"])
    conn = await websocket_connect(req)
    try:
        msg_id = uuid.uuid4().hex
        await conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": USER,
                       "session": uuid.uuid4().hex, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell", "buffers": []}))
        while True:
            raw = await asyncio.wait_for(conn.read_message(), 30)
            assert raw is not None, "the websocket was closed"
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["channel"] == "shell":
                return reply
    finally:
        conn.close()


def test_traefik_fails_on_an_entry_barehub_refuses(tmp_path):
    """A trusted_proxies entry that is no address: barehub refuses it; real traefik,
    given it, does not serve the entry point."""
    import socket
    import sys
    import time
    from pathlib import Path

    with pytest.raises(settings.SettingsError, match="neither an IP address nor a network"):
        settings.parse('[proxy]\ntrusted_proxies = ["proxy.example.org"]\n')
    (port,) = free_ports(1)
    rules = tmp_path / "rules"
    rules.mkdir()
    static = tmp_path / "traefik.toml"
    static.write_text(f'[entryPoints.web]\n  address = "127.0.0.1:{port}"\n'
                      '  [entryPoints.web.forwardedHeaders]\n    trustedIPs = ["proxy.example.org"]\n'
                      f'[providers.file]\n  directory = "{rules}"\n')
    log = tmp_path / "traefik.log"
    p = Proc([str(Path(sys.executable).parent / "traefik"), f"--configfile={static}"], log=log, name="traefik")
    try:
        deadline = time.monotonic() + 10
        while p.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        listening = False
        if p.alive():
            with socket.socket() as sock:
                listening = sock.connect_ex(("127.0.0.1", port)) == 0
    finally:
        rc = p.stop(10)
    helpers.report(f"traefik with trustedIPs = [\"proxy.example.org\"]: exit code {rc}, listening: {listening}")
    assert not listening, log.read_text()
    assert "proxy.example.org" in log.read_text(), log.read_text()
