"""HTTPS end to end on the host, all on loopback, with a real ACME CA.

Debian's pebble (Let's Encrypt's test CA) validates real tls-alpn-01 and
http-01 challenges against traefik; pebble-challtestsrv is its DNS server and
answers 127.0.0.1 for every name. traefik runs from the rendered unit: its
ExecStartPre (`barehub render-proxy`, as root), then its ExecStart as the
proxy user inside the unit's file-system view (TemporaryFileSystem over
state/, the rules, TLS copies and ACME storage bound in; only ACME storage writable by the proxy user),
so the proxy user's permissions are really exercised. The hub runs from its
unit's ExecStart.

One base goes through off -> letsencrypt (tls-alpn-01) -> restart (no new
order) -> letsencrypt (http-01) -> manual -> off, with only edits of
barehub.toml and restarts, and `barehub check` saying what to restart.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import warnings
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import make_env, require_root
from helpers import Proc, constructor_env, free_ports, parse_unit, run_post_install, unit_command, version, wait_for, report

pytestmark = pytest.mark.e2e

DOMAIN, WWW = "hub.test", "www.hub.test"
USER, PASSWORD = "alice", "https-user-password"
PROXY_USER = "barehub-proxy"


# ------------------------------------------------------------------ certificates

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, names: list[str], *, days: int = 30, ips: list[str] = ()):
    import ipaddress

    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1) if days > 0 else now - dt.timedelta(days=10))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------ TLS and HTTP clients

def client_context(cafile: str | None) -> ssl.SSLContext:
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def handshake(port: int, sni: str | None, ctx: ssl.SSLContext | None = None) -> tuple[bytes, str, str]:
    """(DER of the served certificate, TLS version, cipher) for a connection to 127.0.0.1:port."""
    ctx = ctx or client_context(None)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return s.getpeercert(binary_form=True), s.version(), s.cipher()[0]


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 whatever the host name, which is still sent as SNI and Host."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


class LoopbackHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)


class LoopbackHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, ctx):
        super().__init__(context=ctx)
        self.ctx = ctx

    def https_open(self, req):
        return self.do_open(LoopbackHTTPSConnection, req, context=self.ctx)


class LoopbackHTTP(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(LoopbackHTTPConnection, req)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def opener(cafile: str | None = None, jar: CookieJar | None = None):
    handlers = [LoopbackHTTPS(client_context(cafile)), LoopbackHTTP(), NoRedirect()]
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    return urllib.request.build_opener(*handlers)


def fetch(url, *, cafile=None, jar=None, method="GET", data=None, timeout=5):
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with opener(cafile, jar).open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def login(base_url: str, cafile: str | None) -> CookieJar:
    """Log in with the hub's login form, as a browser does; return the cookies."""
    jar = CookieJar()
    status, _, _ = fetch(f"{base_url}/hub/login", cafile=cafile, jar=jar)
    assert status == 200
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    form = urllib.parse.urlencode({"username": USER, "password": PASSWORD, "_xsrf": xsrf}).encode()
    status, headers, body = fetch(f"{base_url}/hub/login", cafile=cafile, jar=jar, method="POST", data=form)
    assert status == 302, body[:500]
    login_cookie = next(c for c in jar if c.name == "jupyterhub-hub-login")
    assert login_cookie.secure == base_url.startswith("https://")
    status, _, body = fetch(f"{base_url}/hub/home", cafile=cafile, jar=jar)
    assert status == 200 and USER.encode() in body
    return jar


# ------------------------------------------------------------------ pebble

@pytest.fixture(scope="module")
def ports():
    names = ("web", "https", "api", "hub", "acme", "mgmt", "dns", "cts")
    return dict(zip(names, free_ports(len(names))))


@pytest.fixture(scope="module")
def pebble(scratch, ports):
    require_root()
    missing = [t for t in ("pebble", "pebble-challtestsrv") if shutil.which(t) is None]
    if missing:  # not a skip: HTTPS must be tested for real wherever `make test` runs
        pytest.fail(f"{', '.join(missing)} missing: install the Debian package pebble (`make test-deps` does)")
    d = scratch / "pebble"
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)
    # pebble's own HTTPS listener needs a certificate; the package ships none.
    ca = make_ca("barehub test: pebble listener CA")
    leaf, leaf_key = make_leaf(ca, ["localhost"], ips=["127.0.0.1"])
    listener_ca = write(d / "listener-ca.pem", pem(ca[0]), 0o644)
    write(d / "cert.pem", pem(leaf), 0o644)
    write(d / "key.pem", key_pem(leaf_key), 0o600)
    (d / "config.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{ports['acme']}",
        "managementListenAddress": f"127.0.0.1:{ports['mgmt']}",
        "certificate": str(d / "cert.pem"), "privateKey": str(d / "key.pem"),
        # where pebble's validator connects for http-01 and tls-alpn-01: traefik
        "httpPort": ports["web"], "tlsPort": ports["https"],
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    # no random validation delays, no bad-nonce retries, and every name validated on every order
    env = {"PATH": os.environ["PATH"], "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
           "PEBBLE_AUTHZREUSE": "0"}
    dns = Proc(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{ports['dns']}", "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-management", f"127.0.0.1:{ports['cts']}"], env=env, log=logs / "challtestsrv.log", name="dns")
    ca_proc = Proc(["pebble", "-config", str(d / "config.json"), "-dnsserver", f"127.0.0.1:{ports['dns']}"],
                   env=env, log=logs / "pebble.log", name="pebble")
    try:
        listener = ssl.create_default_context(cafile=str(listener_ca))

        def roots():
            with urllib.request.urlopen(f"https://127.0.0.1:{ports['mgmt']}/roots/0", context=listener,
                                        timeout=2) as r:
                return r.read()

        # the root pebble issues under is new on every pebble start
        root = wait_for(roots, 30, what="pebble's management API")
        issuing_root = write(d / "issuing-root.pem", root, 0o644)
        yield {"directory": f"https://127.0.0.1:{ports['acme']}/dir", "listener_ca": listener_ca,
               "root": str(issuing_root), "log": ca_proc.log, "proc": ca_proc}
    finally:
        ca_proc.stop(10)
        dns.stop(10)


def orders(pebble) -> int:
    return pebble["log"].read_text(errors="replace").count("POST /order-plz")


# ------------------------------------------------------------------ the base and its two services

class Stack:
    """A base with traefik and the hub started as their units say."""

    def __init__(self, base: Path, ports: dict[str, int], logs: Path):
        self.base, self.ports, self.logs = base, ports, logs
        self.proxy: Proc | None = None
        self.hub: Proc | None = None
        self.runs = {"proxy": 0, "hub": 0}

    @property
    def toml(self) -> Path:
        return self.base / "barehub.toml"

    def set_https(self, **values) -> None:
        """Edit [https] keys in barehub.toml in place, as an admin would."""
        head, sep, section = self.toml.read_text().partition("[https]\n")
        assert sep, "barehub.toml has no [https] section"
        for key, value in values.items():
            line = f"{key} = {json.dumps(value)}"
            section, n = re.subn(rf"(?m)^{key} = .*$", line, section)
            if not n:
                section = f"{line}\n{section}"
        self.toml.write_text(head + sep + section)

    def barehub(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.base / "hub/bin/python"), "-m", "barehub", *args, "--base", str(self.base)],
                              capture_output=True, text=True, timeout=120)

    # -- the proxy, as systemd runs jupyterhub-proxy.service
    def start_proxy(self) -> subprocess.CompletedProcess[str]:
        unit_path = self.base / "generated/jupyterhub-proxy.service"
        unit = parse_unit(unit_path)
        (pre,) = unit["ExecStartPre"]
        assert pre.startswith("-+"), "render-proxy must run as root and never block traefik"
        prepared = subprocess.run(shlex.split(pre[2:]), capture_output=True, text=True, timeout=120)
        argv, env_add, _cwd, user = unit_command(unit_path)
        wrapped = sandboxed(argv, unit, user, self.logs)
        self.runs["proxy"] += 1
        env = {"PATH": os.environ["PATH"], **env_add}
        self.proxy = Proc(wrapped, env=env, log=self.logs / f"proxy.{self.runs['proxy']}.log", name="proxy")
        wait_for(lambda: _listening(self.ports["web"]), 20, what="traefik listening")
        return prepared

    def stop_proxy(self) -> None:
        if self.proxy:
            self.proxy.stop(15)
            self.proxy = None

    def restart_proxy(self) -> subprocess.CompletedProcess[str]:
        """`systemctl restart jupyterhub-proxy`"""
        self.stop_proxy()
        return self.start_proxy()

    # -- the hub
    def start_hub(self, base_url: str, cafile: str | None) -> None:
        argv, env_add, cwd, _user = unit_command(self.base / "generated/jupyterhub.service")
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env_add}
        self.runs["hub"] += 1
        self.hub = Proc(argv, env=env, cwd=cwd, log=self.logs / f"hub.{self.runs['hub']}.log", name="hub")
        try:
            wait_for(lambda: fetch(f"{base_url}/hub/api/", cafile=cafile)[0] == 200, 90, what="hub through traefik")
        except TimeoutError:
            pytest.fail(f"hub not reachable at {base_url}:\n{self.hub.tail()}\n{self.proxy.tail() if self.proxy else ''}")

    def restart_hub(self, base_url: str, cafile: str | None) -> None:
        if self.hub:
            self.hub.stop(30)
        self.start_hub(base_url, cafile)

    def stop(self) -> None:
        if self.hub:
            self.hub.stop(30)
        self.stop_proxy()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def sandboxed(argv: list[str], unit: dict[str, list[str]], user: str, logs: Path) -> list[str]:
    """argv wrapped to run as `user` with the unit's view of the file system.

    Reproduces TemporaryFileSystem=STATE:ro, BindReadOnlyPaths= and BindPaths=
    in a private mount namespace (there is no systemd here), plus
    NoNewPrivileges, so traefik sees exactly what it would see under systemd.
    """
    (tmpfs,) = unit["TemporaryFileSystem"]
    state = tmpfs.split(":")[0]
    binds = [(p, True) for p in unit.get("BindReadOnlyPaths", [])] + [(p, False) for p in unit.get("BindPaths", [])]
    hold = Path(logs / "sandbox-hold")
    lines = ["set -eu"]
    for i, (path, _ro) in enumerate(binds):
        lines += [f"mkdir -p {hold}/{i}", f"mount --bind {shlex.quote(path)} {hold}/{i}"]
    lines.append(f"mount -t tmpfs -o mode=0755 barehub-state {shlex.quote(state)}")
    for i, (path, ro) in enumerate(binds):
        lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {hold}/{i} {shlex.quote(path)}"]
        if ro:
            lines.append(f"mount -o remount,bind,ro {shlex.quote(path)}")
    lines.append(f"mount -o remount,ro {shlex.quote(state)}")
    lines.append(f"exec setpriv --reuid={user} --regid={user} --init-groups --no-new-privs -- "
                 + " ".join(shlex.quote(a) for a in argv))
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(lines)]


@pytest.fixture(scope="module")
def stack(scratch, wheelhouse, ports, pebble):
    """A base installed by post_install.sh with HTTPS off, hub and traefik running."""
    v = version()
    base = scratch / "https-base"
    prefix = make_env(base / "envs" / v, wheelhouse)
    # barehub.toml before the installer runs, as config management would write it:
    # every HTTPS setting is there, and mode = "off" until the admin switches it.
    (base / "barehub.toml").write_text(
        f"[proxy]\nhttp_address = \"127.0.0.1\"\nhttp_port = {ports['web']}\napi_port = {ports['api']}\n\n"
        f"[hub]\nport = {ports['hub']}\n\n"
        "[https]\n"
        'mode = "off"\n'
        f"port = {ports['https']}\n"
        f'email = "admin@example.org"\ndomains = ["{DOMAIN}"]\n'
        f'acme_directory = "{pebble["directory"]}"\n'
        f'acme_ca_certificates = "{pebble["listener_ca"]}"\n'
    )
    result = run_post_install(prefix, constructor_env(prefix, v, extra={"BAREHUB_NO_START": "1"}))
    assert result.returncode == 0, result.stdout + result.stderr
    (base / "jupyterhub_config.d" / "10-auth.py").write_text(
        'c.JupyterHub.authenticator_class = "shared-password"\n'
        f'c.SharedPasswordAuthenticator.user_password = "{PASSWORD}"\n'
        f'c.Authenticator.allowed_users = {{"{USER}"}}\n'
    )
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)
    s = Stack(base, ports, logs)
    try:
        prepared = s.start_proxy()
        assert prepared.returncode == 0, prepared.stderr
        s.start_hub(http_url(ports), None)
        yield s
    finally:
        s.stop()


def http_url(ports) -> str:
    return f"http://{DOMAIN}:{ports['web']}"


def https_url(ports) -> str:
    return f"https://{DOMAIN}:{ports['https']}"


def routes_entrypoints(base: Path) -> set[str]:
    """The entry points of the hub's own routes (their records in the rules file, barehub's format)."""
    from barehub.traefik_proxy import split_rules

    text = (base / "state/proxy/rules/jupyterhub.toml").read_text()
    _, records, bad = split_rules(text)
    assert records is not None and not bad, text[:2000]
    rules = tomllib.loads(text)
    return {ep for record, _ in records for ep in rules["http"]["routers"][record["router"]]["entryPoints"]}


def wait_for_cert(port: int, sni: str, issuer: str, root: str, timeout: float = 60) -> x509.Certificate:
    """The certificate served for `sni` once it is issued by `issuer` and verifies against `root`."""
    def served():
        der, _, _ = handshake(port, sni)
        cert = x509.load_der_x509_certificate(der)
        if issuer not in cert.issuer.rfc4514_string():
            return None
        handshake(port, sni, client_context(root))  # chain and name verify
        return cert

    return wait_for(served, timeout, interval=0.25, what=f"a certificate from {issuer} for {sni}")


def assert_https_basics(ports, cert: x509.Certificate, cafile: str):
    """What every HTTPS mode promises: no-SNI, TLS versions and ciphers, HSTS, redirect, login."""
    port = ports["https"]
    # a client that sends no SNI gets the same, real certificate
    der_sni, version_, _ = handshake(port, DOMAIN)
    der_none, _, _ = handshake(port, None)
    assert der_none == der_sni == cert.public_bytes(serialization.Encoding.DER)
    # TLS 1.1 is refused by the server; TLS 1.2 works, with a modern suite only
    old = client_context(None)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as e:
        handshake(port, DOMAIN, old)
    assert "PROTOCOL_VERSION" in str(e.value).upper() or "UNSUPPORTED_PROTOCOL" in str(e.value).upper(), e.value
    tls12 = client_context(cafile)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    _, v12, cipher = handshake(port, DOMAIN, tls12)
    assert v12 == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    cbc = client_context(cafile)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA")
    with pytest.raises(ssl.SSLError):
        handshake(port, DOMAIN, cbc)
    # HSTS on HTTPS responses
    status, headers, _ = fetch(f"{https_url(ports)}/hub/api/", cafile=cafile)
    assert status == 200 and headers.get("Strict-Transport-Security") == "max-age=31536000", headers
    # plain HTTP: a permanent redirect to the same path on HTTPS
    status, headers, _ = fetch(f"{http_url(ports)}/hub/login?next=%2Fhub%2Fhome")
    assert status == 301, status
    assert headers["Location"] == f"{https_url(ports)}/hub/login?next=%2Fhub%2Fhome"
    # and logging in through HTTPS works (secure cookies)
    login(https_url(ports), cafile)


# ------------------------------------------------------------------ the tests, in order

def test_off_serves_plain_http_and_no_https(stack, ports):
    login(http_url(ports), None)
    assert not _listening(ports["https"])
    assert routes_entrypoints(stack.base) == {"web"}
    r = stack.barehub("check")
    assert r.returncode == 0 and "note:" not in r.stdout, r.stdout + r.stderr


def test_letsencrypt_tls_alpn(stack, ports, pebble):
    before = orders(pebble)
    stack.set_https(mode="letsencrypt")  # the one edit: everything else was already in the file
    r = stack.barehub("check")
    assert r.returncode == 0, r.stderr
    assert "systemctl restart jupyterhub-proxy" in r.stdout
    assert "the hub must follow" in r.stdout and "traefik_entrypoint web -> https" in r.stdout, r.stdout

    t0 = time.monotonic()
    prepared = stack.restart_proxy()
    assert prepared.returncode == 0, prepared.stderr
    cert = wait_for_cert(ports["https"], DOMAIN, "Pebble", pebble["root"])
    issued = time.monotonic() - t0
    stack.restart_hub(https_url(ports), pebble["root"])
    report(f"tls-alpn-01: certificate from pebble served {issued:.1f}s after the proxy restart")

    assert orders(pebble) == before + 1
    assert "type=tls-alpn-01" in stack.proxy.log.read_text()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [DOMAIN]
    acme = stack.base / "state/proxy/acme/acme.json"
    st = acme.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == pwd.getpwnam(PROXY_USER).pw_uid
    assert routes_entrypoints(stack.base) == {"https"}, "the hub moved its routes to the HTTPS entry point"
    assert_https_basics(ports, cert, pebble["root"])
    # our own traefik holds the ports: not a conflict; nothing is pending
    r = stack.barehub("check")
    assert r.returncode == 0 and "note:" not in r.stdout, r.stdout + r.stderr


def test_restart_reuses_the_stored_certificate(stack, ports, pebble):
    served = handshake(ports["https"], DOMAIN)[0]
    before = orders(pebble)
    t0 = time.monotonic()
    stack.restart_proxy()
    cert = wait_for_cert(ports["https"], DOMAIN, "Pebble", pebble["root"], timeout=20)
    report(f"restart: stored certificate served after {time.monotonic() - t0:.1f}s")
    assert cert.public_bytes(serialization.Encoding.DER) == served
    time.sleep(1)
    assert orders(pebble) == before, "a valid stored certificate must not be ordered again"
    assert "Obtaining" not in stack.proxy.log.read_text()


def test_letsencrypt_http01_and_a_second_name(stack, ports, pebble):
    before = orders(pebble)
    stack.set_https(challenge="http-01", domains=[DOMAIN, WWW])
    r = stack.barehub("check")
    assert "systemctl restart jupyterhub-proxy" in r.stdout and "the hub must follow" not in r.stdout, r.stdout
    stack.restart_proxy()

    def both_names():
        cert = wait_for_cert(ports["https"], DOMAIN, "Pebble", pebble["root"], timeout=5)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return cert if set(names.get_values_for_type(x509.DNSName)) == {DOMAIN, WWW} else None

    cert = wait_for(both_names, 60, what="a certificate for both names")
    time.sleep(1)
    assert orders(pebble) == before + 1, "one order for the new set of names, not one per source"
    # the only challenge traefik can answer now is http-01, on the web entry point
    static = tomllib.loads((stack.base / "generated/traefik.toml").read_text())
    (acme,) = [r["acme"] for r in static["certificatesResolvers"].values()]
    assert acme["httpChallenge"] == {"entryPoint": "web"} and "tlsChallenge" not in acme
    log = stack.proxy.log.read_text()
    assert f"http01: Trying to solve HTTP-01. domain={DOMAIN}" in log and f"domain={WWW}" in log
    handshake(ports["https"], WWW, client_context(pebble["root"]))
    # ACME challenges are not redirected (traefik answers them; an unknown token is a 404)
    status, _, _ = fetch(f"{http_url(ports)}/.well-known/acme-challenge/no-such-token")
    assert status == 404
    assert_https_basics(ports, cert, pebble["root"])


def test_manual_certificate(stack, ports, scratch):
    # the admin's files: readable by root only; the proxy user reads barehub's copies
    admin = scratch / "admin-tls"
    admin.mkdir(mode=0o700, exist_ok=True)
    ca = make_ca("barehub test: site CA")
    leaf, key = make_leaf(ca, [DOMAIN, WWW])
    ca_file = write(admin / "site-ca.pem", pem(ca[0]), 0o644)
    cert_file = write(admin / "hub.crt", pem(leaf) + pem(ca[0]), 0o600)
    key_file = write(admin / "hub.key", key_pem(key), 0o600)
    stack.set_https(mode="manual", certificate=str(cert_file), key=str(key_file))
    r = stack.barehub("check")
    assert r.returncode == 0, r.stderr
    assert "systemctl restart jupyterhub-proxy" in r.stdout and "the hub must follow" not in r.stdout, r.stdout
    stack.restart_proxy()
    cert = wait_for_cert(ports["https"], DOMAIN, "site CA", str(ca_file), timeout=20)
    assert cert == leaf
    tls = stack.base / "state/proxy/tls"
    for name in ("certificate.pem", "key.pem"):
        st = (tls / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == pwd.getpwnam(PROXY_USER).pw_gid
    assert not (tls / "acme-ca.pem").exists()
    assert_https_basics(ports, cert, str(ca_file))

    # a key that does not match: check and the proxy's start refuse it, the served certificate stays
    other = write(admin / "other.key", key_pem(ec.generate_private_key(ec.SECP256R1())), 0o600)
    stack.set_https(key=str(other))
    r = stack.barehub("check")
    assert r.returncode == 1 and "does not match" in r.stderr, r.stdout + r.stderr
    prepared = stack.restart_proxy()
    assert prepared.returncode == 1 and "does not match" in prepared.stderr
    assert "keeps its last good configuration" in prepared.stderr
    assert wait_for_cert(ports["https"], DOMAIN, "site CA", str(ca_file), timeout=20) == leaf
    stack.set_https(key=str(key_file))


def test_back_to_off(stack, ports):
    stack.set_https(mode="off")
    r = stack.barehub("check")
    assert "the hub must follow" in r.stdout and "traefik_entrypoint https -> web" in r.stdout, r.stdout
    stack.restart_proxy()
    stack.restart_hub(http_url(ports), None)
    assert routes_entrypoints(stack.base) == {"web"}
    login(http_url(ports), None)
    assert not _listening(ports["https"])
    tls = stack.base / "state/proxy/tls"
    assert not list(tls.iterdir()), "no copy of a private key is left behind"
    assert not (stack.base / "state/proxy/rules/barehub-tls.toml").exists()
    r = stack.barehub("check")
    assert r.returncode == 0 and "note:" not in r.stdout, r.stdout + r.stderr
