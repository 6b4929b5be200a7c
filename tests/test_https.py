"""HTTPS settings: validation, what is rendered for traefik and the hub, and every bad input.

Fast: nothing is started here except throwaway listeners for the port checks.
The real ACME and TLS behaviour is exercised in test_https_host.py.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from traitlets.config import Config

from barehub import hubconfig, install as install_mod, proxy, render, settings, tls
from barehub.install import Context, initial_settings_text, proxy_files, settings_from_environ
from barehub.layout import Layout
from helpers import free_ports, parse_unit, version
from test_https_host import key_pem, make_ca, make_leaf, pem, write
from test_install import barehub, install, snapshot

LE = '[https]\nmode = "letsencrypt"\nemail = "admin@example.org"\ndomains = ["hub.example.org"]\n'


# ------------------------------------------------------------------ settings

def test_defaults_are_off_and_documented(tmp_path):
    s = settings.Settings.defaults()
    assert s["https.mode"] == "off" and s["https.port"] == 443 and s["https.domains"] == []
    assert s["https.challenge"] == "tls-alpn-01" and s["https.hsts_max_age"] == 31536000
    text = initial_settings_text(Layout.at(tmp_path), {})
    section = text.split("[https]", 1)[1]
    for line in ('# mode = "off"', "# port = 443", "# domains = []", '# challenge = "tls-alpn-01"',
                 "# hsts_max_age = 31536000", settings.LETSENCRYPT_STAGING):
        assert line in section
    assert settings.parse(text).values == s.values


def test_letsencrypt_settings_and_public_url():
    s = settings.parse(LE)
    assert s["https.domains"] == ["hub.example.org"]
    assert settings.public_url(s, "head") == "https://hub.example.org/"
    s = settings.parse(LE + "port = 8443\n")
    assert settings.public_url(s, "head") == "https://hub.example.org:8443/"
    s = settings.parse('[https]\nmode = "manual"\ncertificate = "/etc/ssl/hub.pem"\nkey = "/etc/ssl/hub.key"\n')
    assert settings.public_url(s, "head.cluster") == "https://head.cluster/"
    # switching off keeps the other keys: they are ignored
    s = settings.parse(LE.replace('"letsencrypt"', '"off"'))
    assert settings.public_url(s, "head") == "http://head/"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[https]\nmode = "letsencrypt"\nemail = "admin@example.org"\n',
         "https.email is set but https.domains is empty"),
        ('[https]\nmode = "letsencrypt"\ndomains = ["hub.example.org"]\n',
         "https.domains is set but https.email is empty"),
        ('[https]\nmode = "letsencrypt"\n', 'mode = "letsencrypt" needs https.email and https.domains'),
        ('[https]\nmode = "manual"\ncertificate = "/etc/ssl/hub.pem"\n', 'mode = "manual" needs https.key'),
        ('[https]\nmode = "manual"\n', "needs https.certificate and https.key"),
        ('[https]\nmode = "on"\n', 'https.mode = \'on\' must be one of "off", "letsencrypt", "manual"'),
        ('[https]\nchallenge = "dns-01"\n', 'must be one of "tls-alpn-01", "http-01"'),
        ('[https]\ndomains = "hub.example.org"\n', "must be a list of strs"),
        ("[https]\ndomains = [1]\n", "must be a list of strs"),
        ('[https]\ndomains = ["*.example.org"]\n', "wildcard certificates need the dns-01 challenge"),
        ('[https]\ndomains = ["Hub.Example.org"]\n', "not a lower-case DNS name"),
        ('[https]\ndomains = ["hub.example.org", "hub.example.org"]\n', "lists a name twice"),
        ('[https]\nemail = "admin"\n', "must be an e-mail address"),
        ('[https]\nacme_directory = "http://ca.example.org/dir"\n', "must be an https:// URL"),
        ('[https]\ncertificate = "hub.pem"\n', "must be an absolute path"),
        ("[https]\nhsts_max_age = -1\n", "must be between 0 and 2147483647 seconds"),
        (LE + "port = 80\n", "https.port and proxy.http_port are both 80"),
        (LE + '[hub]\npublic_url = "http://hub.example.org"\n', "is http:// but https.mode is \"letsencrypt\""),
    ],
)
def test_bad_https_settings_name_file_key_and_fix(text, fragment):
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(text, "/opt/barehub/barehub.toml")
    msg = str(e.value)
    assert fragment in msg and "/opt/barehub/barehub.toml: " in msg and "barehub check" in msg, msg


def test_https_port_may_equal_others_when_off():
    settings.parse("[https]\nport = 80\n")


def test_lists_from_environment_are_comma_separated(tmp_path):
    env = {"BAREHUB_HTTPS_MODE": "letsencrypt", "BAREHUB_HTTPS_EMAIL": "admin@example.org",
           "BAREHUB_HTTPS_DOMAINS": "hub.example.org, www.hub.example.org,", "BAREHUB_HTTPS_PORT": "8443"}
    values = settings_from_environ(env)
    assert values == {"https": {"mode": "letsencrypt", "email": "admin@example.org",
                                "domains": ["hub.example.org", "www.hub.example.org"], "port": 8443}}
    text = initial_settings_text(Layout.at(tmp_path), values)
    assert tomllib.loads(text)["https"]["domains"] == ["hub.example.org", "www.hub.example.org"]
    assert settings.parse(text)["https.domains"] == ["hub.example.org", "www.hub.example.org"]


# ------------------------------------------------------------------ what traefik and the hub get

def rendered(tmp_path, text: str) -> tuple[dict, str | None, Layout]:
    lay = Layout.at(tmp_path / "base")
    files = proxy_files(Context(lay, settings.parse(text), Path(sys.prefix)))
    static = tomllib.loads(files[lay.traefik_toml][0])
    return static, files[lay.tls_rules_file][0], lay


def test_off_renders_no_tls(tmp_path):
    static, tls_rules, _ = rendered(tmp_path, "")
    assert set(static["entryPoints"]) == {"web", "hubapi"}
    assert "http" not in static["entryPoints"]["web"] and "certificatesResolvers" not in static
    assert tls_rules is None


def test_letsencrypt_renders_entry_point_tls_redirect_and_resolver(tmp_path):
    static, tls_rules, lay = rendered(tmp_path, LE.replace('["hub.example.org"]', '["hub.example.org", "www.example.org"]')
                                      + 'challenge = "http-01"\n')
    eps = static["entryPoints"]
    assert eps["web"]["http"]["redirections"]["entryPoint"] == {"to": "https", "scheme": "https", "permanent": True}
    assert eps["https"]["address"] == ":443"
    assert eps["https"]["http"]["middlewares"] == ["barehub-hsts@file"]
    # the names are ordered once, as the default certificate (also for clients without SNI);
    # listing them on the entry point too makes traefik order twice at once
    assert eps["https"]["http"]["tls"] == {"certResolver": "letsencrypt"}
    acme = static["certificatesResolvers"]["letsencrypt"]["acme"]
    assert acme == {"email": "admin@example.org", "storage": str(lay.acme_dir / "acme.json"),
                    "caServer": settings.LETSENCRYPT, "keyType": "EC256", "httpChallenge": {"entryPoint": "web"}}
    dyn = tomllib.loads(tls_rules)
    opts = dyn["tls"]["options"]["default"]
    assert opts["minVersion"] == "VersionTLS12" and opts["sniStrict"] is False
    assert all("GCM" in c or "CHACHA20" in c for c in opts["cipherSuites"])
    assert dyn["tls"]["stores"]["default"]["defaultGeneratedCert"] == {
        "resolver": "letsencrypt", "domain": {"main": "hub.example.org", "sans": ["www.example.org"]}}
    assert dyn["http"]["middlewares"]["barehub-hsts"]["headers"] == {"stsSeconds": 31536000}


def test_each_acme_directory_gets_its_own_resolver(tmp_path):
    """A staging certificate must never be served after switching to production."""
    names = set()
    for directory in ("", settings.LETSENCRYPT_STAGING, "https://ca.internal/acme/dir"):
        static, _, _ = rendered(tmp_path, LE + f'acme_directory = "{directory}"\n')
        (name,) = static["certificatesResolvers"]
        assert static["entryPoints"]["https"]["http"]["tls"]["certResolver"] == name
        names.add(name)
    assert len(names) == 3


def test_tls_alpn_and_no_hsts(tmp_path):
    static, tls_rules, _ = rendered(tmp_path, LE + "hsts_max_age = 0\n")
    (acme,) = [r["acme"] for r in static["certificatesResolvers"].values()]
    assert acme["tlsChallenge"] == {} and "httpChallenge" not in acme
    assert "middlewares" not in static["entryPoints"]["https"]["http"]
    assert "middlewares" not in tomllib.loads(tls_rules).get("http", {})


def test_manual_renders_the_copies_as_default_certificate(tmp_path):
    ca = make_ca("test CA")
    leaf, key = make_leaf(ca, ["hub.example.org"])
    cert_file = write(tmp_path / "hub.pem", pem(leaf), 0o600)
    key_file = write(tmp_path / "hub.key", key_pem(key), 0o600)
    text = f'[https]\nmode = "manual"\ncertificate = "{cert_file}"\nkey = "{key_file}"\n'
    static, tls_rules, lay = rendered(tmp_path, text)
    assert static["entryPoints"]["https"]["http"]["tls"] == {}
    assert "certificatesResolvers" not in static
    dyn = tomllib.loads(tls_rules)
    pair = {"certFile": str(lay.tls_dir / "certificate.pem"), "keyFile": str(lay.tls_dir / "key.pem")}
    assert dyn["tls"]["certificates"] == [pair]
    assert dyn["tls"]["stores"]["default"]["defaultCertificate"] == pair


@pytest.mark.parametrize("text, entrypoint, bind, public", [
    ("", "web", "http://:8000", None),
    (LE, "https", "https://:443", "https://hub.example.org/"),
    (LE + '[hub]\npublic_url = "https://jupyter.example.org/"\n', "https", "https://:443", "https://jupyter.example.org/"),
])
def test_hub_and_traefik_agree(tmp_path, text, entrypoint, bind, public):
    lay = Layout.at(tmp_path / "base")
    lay.state.mkdir(parents=True)
    render.write_atomic(lay.settings_file, "[proxy]\nhttp_port = 8000\n" + text)
    render.ensure_secret(lay.proxy_api_password)
    c = Config()
    hubconfig.base_config(lay, c)
    static = tomllib.loads(proxy_files(Context(lay, settings.load(lay.settings_file), Path(sys.prefix)))
                           [lay.traefik_toml][0])
    t = c.TraefikFileProviderProxy
    assert t.traefik_entrypoint == entrypoint and entrypoint in static["entryPoints"]
    assert c.JupyterHub.bind_url == bind
    assert (c.JupyterHub.public_url if "public_url" in c.JupyterHub else None) == public
    if entrypoint == "https":
        assert "tls" in static["entryPoints"]["https"]["http"]


def test_hub_moves_existing_routes_to_the_current_entry_point(tmp_path):
    """After HTTPS is switched on, routes written for "web" must move to "https"."""
    from barehub.traefik_proxy import BarehubProxy

    rules = tmp_path / "jupyterhub.toml"
    rules.write_text(
        '[http.routers.route_api]\nrule = "PathPrefix(`/api`)"\nentryPoints = ["hubapi"]\nservice = "api@internal"\n'
        '[http.routers.router__2F]\nrule = "PathPrefix(`/`)"\nentryPoints = ["web"]\nservice = "service__2F"\n'
        '[http.services.service__2F.loadBalancer]\npassHostHeader = true\n'
        '[[http.services.service__2F.loadBalancer.servers]]\nurl = "http://127.0.0.1:8081"\n'
        '[jupyterhub.routes.router__2F]\nroutespec = "/"\ntarget = "http://127.0.0.1:8081"\n'
        'router = "router__2F"\nservice = "service__2F"\n[jupyterhub.routes.router__2F.data]\nhub = true\n'
    )

    async def load():
        p = BarehubProxy(should_start=True, dynamic_config_file=str(rules), traefik_entrypoint="https",
                         traefik_api_password="x")
        return p.dynamic_config

    config = asyncio.run(load())
    assert config["http"]["routers"]["router__2F"]["entryPoints"] == ["https"]
    assert config["http"]["routers"]["route_api"]["entryPoints"] == ["hubapi"]


def test_proxy_unit_applies_barehub_toml_before_traefik_starts(base):
    assert install(base, "--no-start").returncode == 0
    u = parse_unit(base / "generated" / "jupyterhub-proxy.service")
    (pre,) = u["ExecStartPre"]
    assert pre == f"-+{base}/hub/bin/python -m barehub render-proxy --base={base}"
    assert f"{base}/state/proxy/tls" in u["BindPaths"]


# ------------------------------------------------------------------ certificate and key files

@pytest.fixture(scope="module")
def pair(scratch):
    d = scratch / "tls"  # world-traversable: the non-root test must reach the certificate
    d.mkdir()
    ca = make_ca("test CA")
    leaf, key = make_leaf(ca, ["hub.example.org"])
    expired, expired_key = make_leaf(ca, ["hub.example.org"], days=-1)
    return {
        "dir": d,
        "cert": write(d / "hub.pem", pem(leaf) + pem(ca[0]), 0o644),
        "key": write(d / "hub.key", key_pem(key), 0o600),
        "expired": write(d / "expired.pem", pem(expired), 0o644),
        "expired_key": write(d / "expired.key", key_pem(expired_key), 0o600),
        "other_key": write(d / "other.key", key_pem(ec.generate_private_key(ec.SECP256R1())), 0o600),
    }


def test_good_pair(pair):
    found = tls.check_manual(str(pair["cert"]), str(pair["key"]), ["hub.example.org"])
    assert found.problems == [] and found.warnings == []


def test_key_that_does_not_match(pair):
    found = tls.check_manual(str(pair["cert"]), str(pair["other_key"]), [])
    assert len(found.problems) == 1 and "does not match https.certificate" in found.problems[0]


def test_expired_certificate_is_a_warning(pair):
    found = tls.check_manual(str(pair["expired"]), str(pair["expired_key"]), [])
    assert found.problems == [] and len(found.warnings) == 1 and "expired on" in found.warnings[0]


def test_certificate_for_other_names_is_a_warning(pair):
    found = tls.check_manual(str(pair["cert"]), str(pair["key"]), ["other.example.org"])
    assert found.problems == [] and "does not cover 'other.example.org'" in found.warnings[0]


def test_unreadable_or_wrong_files(pair, tmp_path):
    d = pair["dir"]
    found = tls.check_manual(str(d / "missing.pem"), str(d), [])
    assert "https.certificate" in found.problems[0] and "no such file" in found.problems[0]
    assert "https.key" in found.problems[1] and "is a directory" in found.problems[1]
    found = tls.check_manual(str(pair["key"]), str(pair["cert"]), [])
    assert "holds no PEM certificate" in found.problems[0] and "holds no PEM private key" in found.problems[1]
    encrypted = write(tmp_path / "enc.key", b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n", 0o600)
    found = tls.check_manual(str(pair["cert"]), str(encrypted), [])
    assert "encrypted with a passphrase" in found.problems[0]


def test_key_unreadable_for_a_non_root_check(pair, world_python):
    """A key only root may read: an error for root's install and proxy start, a warning for
    a check by another user (the hub's `systemctl reload` when hub.user is not root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    code = (
        "import sys; from barehub import gate, settings\n"
        "from barehub.layout import Layout\n"
        "s = settings.parse('[https]\\nmode = \"manual\"\\ncertificate = \"%s\"\\nkey = \"%s\"\\n')\n"
        "for strict in (True, False):\n"
        "    f = gate.Report()\n"
        "    gate.check_settings_files(Layout.at('/nonexistent'), s, f, ports=False, root=strict)\n"
        "    print(strict, [w.what for w in f.problems], [w.what for w in f.warnings])\n" % (pair["cert"], pair["key"])
    )
    r = subprocess.run([str(world_python.python), "-c", code], capture_output=True, text=True, user="nobody",
                       env=world_python.environ(), cwd="/")
    strict, lenient = r.stdout.splitlines()
    assert strict.startswith("True [\"https.key = ") and strict.endswith("[]"), r.stdout + r.stderr
    assert lenient.startswith("False [] [\"https.key = "), r.stdout
    assert "permission denied" in strict and "as root" in strict


# ------------------------------------------------------------------ `barehub check` and `install` refuse bad input

def write_settings(base: Path, text: str) -> None:
    (base / "barehub.toml").write_text(text)


def assert_refused(base: Path, fragments: list[str], *, start: bool = False):
    """install changes nothing and check reports the same problems."""
    before = snapshot(base)
    r = install(base, *([] if start else ["--no-start"]))
    assert r.returncode == 1, r.stdout + r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr
    assert snapshot(base) == before, "a refused install changed files"
    c = barehub("check", "--base", str(base))
    assert c.returncode == 1
    for f in fragments:
        assert f in c.stderr, c.stderr


@pytest.mark.parametrize("text, fragments", [
    ('[https]\nmode = "letsencrypt"\nemail = "admin@example.org"\n', ["https.email is set but https.domains is empty"]),
    ('[https]\nmode = "letsencrypt"\ndomains = ["hub.example.org"]\n', ["https.domains is set but https.email is empty"]),
])
def test_email_and_domains_go_together(base, text, fragments):
    assert install(base, "--no-start").returncode == 0
    write_settings(base, text)
    assert_refused(base, fragments)


def test_bad_manual_files_are_refused(base, pair):
    assert install(base, "--no-start").returncode == 0
    toml = base / "barehub.toml"
    cases = [
        (str(base / "nope.pem"), str(pair["key"]), "no such file"),
        (str(pair["cert"]), str(pair["other_key"]), "does not match https.certificate"),
    ]
    for cert, key, fragment in cases:
        toml.write_text(f'[https]\nmode = "manual"\ncertificate = "{cert}"\nkey = "{key}"\n')
        assert_refused(base, [str(toml), fragment])


def test_expired_manual_certificate_installs_with_a_warning(base, pair):
    assert install(base, "--no-start").returncode == 0
    write_settings(base, f'[https]\nmode = "manual"\ncertificate = "{pair["expired"]}"\nkey = "{pair["expired_key"]}"\n')
    r = install(base, "--no-start")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stdout and "expired on" in r.stdout
    c = barehub("check", "--base", str(base))
    assert c.returncode == 0 and "warning:" in c.stdout and "expired on" in c.stdout
    copy = base / "state/proxy/tls/key.pem"
    assert copy.read_bytes() == pair["expired_key"].read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert copy.stat().st_gid == pwd.getpwnam("barehub-proxy").pw_gid
    # switching off removes the copies
    write_settings(base, "")
    assert install(base, "--no-start").returncode == 0
    assert not copy.exists() and not (base / "state/proxy/rules/barehub-tls.toml").exists()


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1 as root, like a foreign web server."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_port_taken_is_reported_by_check(base, listener):
    assert install(base, "--no-start").returncode == 0
    write_settings(base, f'[proxy]\nhttp_address = "127.0.0.1"\nhttp_port = {listener}\n')
    c = barehub("check", "--base", str(base))
    assert c.returncode == 1
    assert f"proxy.http_port = {listener}: port {listener} is already in use on 127.0.0.1 by python" in c.stderr
    assert "choose another port for proxy.http_port" in c.stderr
    # the HTTPS port only counts with HTTPS on
    write_settings(base, f"[https]\nport = {listener}\n")
    assert barehub("check", "--base", str(base)).returncode == 0
    write_settings(base, LE + f"port = {listener}\n")
    c = barehub("check", "--base", str(base))
    assert c.returncode == 1 and f"https.port = {listener}: port {listener} is already in use" in c.stderr


def test_port_taken_refuses_an_install_that_would_start(base, listener, monkeypatch):
    assert install(base, "--no-start").returncode == 0
    write_settings(base, f"[proxy]\nhttp_port = {listener}\n")
    lay = Layout.at(base)
    monkeypatch.setattr(install_mod.systemd, "is_running", lambda: True)
    before = snapshot(base)
    with pytest.raises(install_mod.InstallError, match=f"port {listener} is already in use") as e:
        install_mod.install(base, base / "envs" / version(), environ={}, say=lambda _: None)
    assert "Nothing was changed" in str(e.value)
    assert snapshot(base) == before
    # render-proxy (the proxy's ExecStartPre) refuses too and keeps the last good configuration
    r = barehub("render-proxy", "--base", str(base))
    assert r.returncode == 1 and "keeps its last good configuration" in r.stderr
    assert snapshot(base) == before
    assert lay.traefik_toml.exists()


def test_our_own_traefik_is_not_a_conflict(base, world_python):
    assert install(base, "--no-start").returncode == 0
    (port,) = free_ports(1)
    write_settings(base, f'[proxy]\nhttp_address = "127.0.0.1"\nhttp_port = {port}\n')
    code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); print('up',flush=True); time.sleep(60)"
    # a listener owned by the proxy user is traefik (running, or being restarted)
    p = subprocess.Popen([str(world_python.python), "-c", code], user="barehub-proxy", stdout=subprocess.PIPE,
                         text=True, cwd="/")
    try:
        assert p.stdout.readline().strip() == "up"
        c = barehub("check", "--base", str(base))
        assert c.returncode == 0, c.stderr
    finally:
        p.kill()
        p.wait()


def test_listener_addresses_are_decoded():
    assert proxy._hex_address("0100007F") == "127.0.0.1"
    assert proxy._hex_address("00000000000000000000000000000000") == "::"
    assert proxy._hex_address("0000000000000000FFFF00000100007F") == "127.0.0.1"
    assert proxy._hex_address("00000000000000000000000001000000") == "::1"
    mine = proxy.Listener("0.0.0.0", 80, 12345, 0)
    lay = Layout.at("/nonexistent")
    s = settings.parse("[proxy]\nhttp_port = 80\n")
    assert proxy.ports_in_use(lay, s, [mine]) and not proxy.ports_in_use(lay, s, [proxy.Listener("0.0.0.0", 81, 1, 0)])
    s = settings.parse('[proxy]\nhttp_address = "10.0.0.1"\nhttp_port = 80\n')
    assert not proxy.ports_in_use(lay, s, [proxy.Listener("127.0.0.1", 80, 12345, 0)])


# ------------------------------------------------------------------ what to restart

def test_render_proxy_applies_an_edit(base):
    assert install(base, "--no-start").returncode == 0
    write_settings(base, LE)
    c = barehub("check", "--base", str(base))
    assert c.returncode == 0 and "systemctl restart jupyterhub-proxy" in c.stdout, c.stdout + c.stderr
    r = barehub("render-proxy", "--base", str(base))
    assert r.returncode == 0, r.stderr
    assert "[certificatesResolvers.letsencrypt.acme]" in (base / "generated/traefik.toml").read_text()
    tls_rules = base / "state/proxy/rules/barehub-tls.toml"
    assert stat.S_IMODE(tls_rules.stat().st_mode) == 0o640
    assert tls_rules.stat().st_gid == pwd.getpwnam("barehub-proxy").pw_gid
    c = barehub("check", "--base", str(base))
    assert "systemctl restart jupyterhub-proxy" not in c.stdout, c.stdout


def test_check_says_when_the_hub_must_follow(base):
    assert install(base, "--no-start").returncode == 0
    lay = Layout.at(base)
    hubconfig.record_applied(lay)  # what a hub started now would record
    assert "the hub must follow" not in barehub("check", "--base", str(base)).stdout
    write_settings(base, LE)
    c = barehub("check", "--base", str(base))
    assert "the hub must follow" in c.stdout and "systemctl restart jupyterhub-proxy jupyterhub" in c.stdout
    assert "public_url (unset) -> https://hub.example.org/" in c.stdout


def test_https_from_environment_on_first_install(base):
    """The installer's unattended path (Ansible, Puppet): BAREHUB_HTTPS_* on the first install."""
    before = snapshot(base)
    r = install(base, "--no-start", env={"BAREHUB_HTTPS_MODE": "letsencrypt",
                                         "BAREHUB_HTTPS_EMAIL": "admin@example.org"})
    assert r.returncode == 1 and "https.email is set but https.domains is empty" in r.stderr, r.stderr
    assert "(from BAREHUB_* variables)" in r.stderr
    assert snapshot(base) == before and not (base / "barehub.toml").exists()

    r = install(base, "--no-start", env={"BAREHUB_HTTPS_MODE": "letsencrypt", "BAREHUB_HTTPS_EMAIL": "admin@example.org",
                                         "BAREHUB_HTTPS_DOMAINS": "hub.example.org,www.example.org"})
    assert r.returncode == 0, r.stderr
    written = tomllib.loads((base / "barehub.toml").read_text())["https"]
    assert written == {"mode": "letsencrypt", "email": "admin@example.org",
                       "domains": ["hub.example.org", "www.example.org"]}
    static = tomllib.loads((base / "generated/traefik.toml").read_text())
    assert static["entryPoints"]["https"]["http"]["tls"] == {"certResolver": "letsencrypt"}
    dyn = tomllib.loads((base / "state/proxy/rules/barehub-tls.toml").read_text())
    assert dyn["tls"]["stores"]["default"]["defaultGeneratedCert"]["domain"] == {
        "main": "hub.example.org", "sans": ["www.example.org"]}


def test_status_shows_the_https_mode(base):
    assert install(base, "--no-start").returncode == 0
    assert "https       off: plain HTTP only" in barehub("status", "--base", str(base)).stdout
    write_settings(base, LE)
    out = barehub("status", "--base", str(base)).stdout
    assert "public URL  https://hub.example.org/" in out
    assert "https       letsencrypt: certificates for hub.example.org from Let's Encrypt" in out
